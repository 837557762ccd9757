/* test-createopts.c — the createOptions model: a table of coercions as edgeAgent's Newtonsoft.Json
 * makes them (strings holding booleans and numbers, numbers where strings are wanted, names in any
 * case sent in the API's spelling), the values it refuses with the JSON path and the expected
 * type, fields the model does not know (kept and noted), and the accessors the engines use. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/json.h"
#include "base/str.h"
#include "engine/createopts.h"

/* JSON written with single quotes for readability: every ' becomes ". */
static json_t *J(const char *text)
{
    char *t = strdup(text);
    assert_non_null(t);
    for (char *p = t; *p; p++)
        if (*p == '\'')
            *p = '"';
    json_error_t je;
    json_t *j = json_loads(t, JSON_DECODE_ANY, &je);
    if (!j)
        fail_msg("bad test JSON: %s: %s", je.text, t);
    free(t);
    return j;
}

struct reports {
    struct lstrv errors, notes;
};

static void collect(void *ud, bool error, const char *path, const char *msg)
{
    struct reports *r = ud;
    lstrv_printf(error ? &r->errors : &r->notes, "%s: %s", path, msg);
}

static void dump(const char *what, const struct lstrv *l)
{
    for (size_t i = 0; i < l->n; i++)
        fprintf(stderr, "  %s: %s\n", what, l->v[i]);
}

/* One row: createOptions as given; what it normalises to (NULL: refused) and the one report it
 * makes (an error when refused, a note otherwise; NULL: none). */
struct row {
    const char *given;
    const char *want;
    const char *report;
};

static const struct row coercions[] = {
    /* booleans: strings holding them in any case, numbers; the connectivity manifest's form */
    {"{'HostConfig':{'Privileged':'true','NetworkMode':'host'}}",
     "{'HostConfig':{'Privileged':true,'NetworkMode':'host'}}", NULL},
    {"{'HostConfig':{'Privileged':'False'}}", "{'HostConfig':{'Privileged':false}}", NULL},
    {"{'HostConfig':{'Privileged':' TRUE '}}", "{'HostConfig':{'Privileged':true}}", NULL},
    {"{'HostConfig':{'Privileged':1,'ReadonlyRootfs':0}}",
     "{'HostConfig':{'Privileged':true,'ReadonlyRootfs':false}}", NULL},
    {"{'Tty':'true','OpenStdin':true}", "{'Tty':true,'OpenStdin':true}", NULL},
    {"{'HostConfig':{'Privileged':'yes'}}", NULL,
     "createOptions.HostConfig.Privileged: expected a boolean, got \"yes\""},
    {"{'HostConfig':{'Privileged':''}}", NULL,
     "createOptions.HostConfig.Privileged: expected a boolean, got \"\""},
    {"{'HostConfig':{'Privileged':[true]}}", NULL,
     "createOptions.HostConfig.Privileged: expected a boolean, got an array"},
    /* integers: strings holding decimal integers, fractions rounded half to even */
    {"{'HostConfig':{'Memory':'536870912'}}", "{'HostConfig':{'Memory':536870912}}", NULL},
    {"{'HostConfig':{'Memory':' -1 ','MemorySwap':'+5'}}",
     "{'HostConfig':{'Memory':-1,'MemorySwap':5}}", NULL},
    {"{'HostConfig':{'NanoCpus':1.5e9,'CpuShares':2.5,'CpuQuota':3.5}}",
     "{'HostConfig':{'NanoCpus':1500000000,'CpuShares':2,'CpuQuota':4}}", NULL},
    {"{'HostConfig':{'Memory':'lots'}}", NULL,
     "createOptions.HostConfig.Memory: expected an integer, got \"lots\""},
    {"{'HostConfig':{'Memory':'1.5'}}", NULL,
     "createOptions.HostConfig.Memory: expected an integer, got \"1.5\""},
    {"{'HostConfig':{'Memory':'1e9'}}", NULL,
     "createOptions.HostConfig.Memory: expected an integer, got \"1e9\""},
    {"{'HostConfig':{'Memory':true}}", NULL,
     "createOptions.HostConfig.Memory: expected an integer, got true"},
    {"{'HostConfig':{'Memory':'99999999999999999999'}}", NULL,
     "createOptions.HostConfig.Memory: expected a 64-bit integer, got \"99999999999999999999\""},
    {"{'HostConfig':{'BlkioWeight':'500'}}", "{'HostConfig':{'BlkioWeight':500}}", NULL},
    {"{'HostConfig':{'BlkioWeight':70000}}", NULL,
     "createOptions.HostConfig.BlkioWeight: expected an integer from 0 to 65535, got 70000"},
    {"{'HostConfig':{'Mounts':[{'Type':'tmpfs','Target':'/t','TmpfsOptions':{'Mode':-1}}]}}", NULL,
     "createOptions.HostConfig.Mounts[0].TmpfsOptions.Mode: expected an integer from 0 to "
     "4294967295, got -1"},
    {"{'StopTimeout':'30','Healthcheck':{'Interval':'1000000000','Retries':'3'}}",
     "{'StopTimeout':30,'Healthcheck':{'Interval':1000000000,'Retries':3}}", NULL},
    /* strings: numbers as their decimal text, booleans as true/false */
    {"{'HostConfig':{'PortBindings':{'80/tcp':[{'HostPort':80}]}}}",
     "{'HostConfig':{'PortBindings':{'80/tcp':[{'HostPort':'80'}]}}}", NULL},
    {"{'HostConfig':{'LogConfig':{'Type':'json-file','Config':{'max-size':'10m','max-file':3,"
     "'compress':true}}}}",
     "{'HostConfig':{'LogConfig':{'Type':'json-file','Config':{'max-size':'10m','max-file':'3',"
     "'compress':'true'}}}}",
     NULL},
    {"{'Labels':{'a':1,'b':false,'c':0.5,'d':1e21},'Env':['A=1',2]}",
     "{'Labels':{'a':'1','b':'false','c':'0.5','d':'1E+21'},'Env':['A=1','2']}", NULL},
    {"{'User':{'name':'root'}}", NULL, "createOptions.User: expected a string, got an object"},
    {"{'Env':'A=1'}", NULL, "createOptions.Env: expected an array, got \"A=1\""},
    {"{'Labels':['a=b']}", NULL, "createOptions.Labels: expected an object, got an array"},
    /* names in any case, sent in the API's spelling; map keys kept as given */
    {"{'hostconfig':{'privileged':'true','portbindings':{'5671/TCP':[{'hostport':'5671',"
     "'hostip':'0.0.0.0'}]}},'exposedports':{'5671/TCP':{}}}",
     "{'HostConfig':{'Privileged':true,'PortBindings':{'5671/TCP':[{'HostPort':'5671',"
     "'HostIp':'0.0.0.0'}]}},'ExposedPorts':{'5671/TCP':{}}}",
     NULL},
    {"{'HostConfig':{'NANOCPUS':'1000000000','nanoCpus':2}}", NULL,
     "createOptions.HostConfig.nanoCpus: given twice (also as NanoCpus)"},
    /* Cmd and Entrypoint as one string, as dockerd's own decoding reads them */
    {"{'Cmd':'run --fast','Entrypoint':['/bin/sh','-c'],'Shell':'/bin/sh'}",
     "{'Cmd':['run --fast'],'Entrypoint':['/bin/sh','-c'],'Shell':['/bin/sh']}", NULL},
    {"{'Cmd':5}", "{'Cmd':['5']}", NULL},
    {"{'Cmd':{'a':1}}", NULL,
     "createOptions.Cmd: expected an array of strings or a string, got an object"},
    /* nulls are left out; the values of ExposedPorts and Volumes are {} */
    {"{'User':null,'HostConfig':{'Binds':null,'Memory':null},'ExposedPorts':{'80/tcp':null},"
     "'Volumes':{'/data':{'x':1}}}",
     "{'HostConfig':{},'ExposedPorts':{'80/tcp':{}},'Volumes':{'/data':{}}}", NULL},
    {"{'ExposedPorts':{'80/tcp':''}}", NULL,
     "createOptions.ExposedPorts.80/tcp: expected {}, got \"\""},
    /* everything nested: mounts, devices, GPUs, ulimits, restart policy, tmpfs, sysctls */
    {"{'HostConfig':{'Mounts':[{'type':'bind','source':'/src','target':'/dst','readonly':'true',"
     "'bindoptions':{'propagation':'rshared','createmountpoint':'true'}}],"
     "'Devices':[{'pathonhost':'/dev/ttyUSB0','pathincontainer':'/dev/ttyUSB0',"
     "'cgrouppermissions':'rwm'}],"
     "'DeviceRequests':[{'driver':'nvidia','count':'-1','capabilities':[['gpu']]}],"
     "'Ulimits':[{'name':'nofile','soft':'1024','hard':2048}],"
     "'RestartPolicy':{'name':'on-failure','maximumretrycount':'3'},"
     "'Tmpfs':{'/run':'size=64m'},'Sysctls':{'net.ipv4.ip_forward':1},"
     "'CapAdd':['NET_ADMIN'],'CapDrop':['MKNOD'],'ShmSize':'67108864',"
     "'PidsLimit':'100','OomKillDisable':'false','Init':'true'}}",
     "{'HostConfig':{'Mounts':[{'Type':'bind','Source':'/src','Target':'/dst','ReadOnly':true,"
     "'BindOptions':{'Propagation':'rshared','CreateMountpoint':true}}],"
     "'Devices':[{'PathOnHost':'/dev/ttyUSB0','PathInContainer':'/dev/ttyUSB0',"
     "'CgroupPermissions':'rwm'}],"
     "'DeviceRequests':[{'Driver':'nvidia','Count':-1,'Capabilities':[['gpu']]}],"
     "'Ulimits':[{'Name':'nofile','Soft':1024,'Hard':2048}],"
     "'RestartPolicy':{'Name':'on-failure','MaximumRetryCount':3},"
     "'Tmpfs':{'/run':'size=64m'},'Sysctls':{'net.ipv4.ip_forward':'1'},"
     "'CapAdd':['NET_ADMIN'],'CapDrop':['MKNOD'],'ShmSize':67108864,"
     "'PidsLimit':100,'OomKillDisable':false,'Init':true}}",
     NULL},
    {"{'NetworkingConfig':{'endpointsconfig':{'host':{},'mine':{'aliases':['a'],"
     "'ipamconfig':{'ipv4address':'172.30.0.9'}}}}}",
     "{'NetworkingConfig':{'EndpointsConfig':{'host':{},'mine':{'Aliases':['a'],"
     "'IPAMConfig':{'IPv4Address':'172.30.0.9'}}}}}",
     NULL},
    {"{'NetworkingConfig':{'EndpointsConfig':{'mine':{'IPPrefixLen':'x'}}}}", NULL,
     "createOptions.NetworkingConfig.EndpointsConfig.mine.IPPrefixLen: expected an integer, got "
     "\"x\""},
    {"{'HostConfig':{'Ulimits':[{'Name':'nofile','Soft':'many'}]}}", NULL,
     "createOptions.HostConfig.Ulimits[0].Soft: expected an integer, got \"many\""},
    /* fields the model does not know: kept as given (the engine decides), and noted */
    {"{'HostConfig':{'Privileged':'true','FancyNewThing':{'a':1}}}",
     "{'HostConfig':{'Privileged':true,'FancyNewThing':{'a':1}}}",
     "createOptions.HostConfig.FancyNewThing: not a field of the Engine API's ContainerCreate "
     "body that ledge knows; passed to the engine as given"},
    {"{'k8s-experimental':{'volumes':[1]}}", "{'k8s-experimental':{'volumes':[1]}}",
     "createOptions.k8s-experimental: not a field of the Engine API's ContainerCreate body that "
     "ledge knows; passed to the engine as given"},
    /* a long string is cut in the message; user names' control bytes are escaped */
    {"{'HostConfig':{'Memory':'a012345678901234567890123456789012345678901234567891234567'}}", NULL,
     "createOptions.HostConfig.Memory: expected an integer, got "
     "\"a012345678901234567890123456789012345678901...\""},
    {"{'Labels':{'a\\u0001b':{}}}", NULL,
     "createOptions.Labels.a\\x01b: expected a string, got an object"},
};

static void test_coercions(void **state)
{
    for (size_t i = 0; i < ARRAY_SIZE(coercions); i++) {
        const struct row *t = &coercions[i];
        json_t *given = J(t->given);
        struct reports rep = {LSTRV_INIT, LSTRV_INIT};
        json_t *doc = NULL;
        int r = createopts_normalize(given, "createOptions", collect, &rep, &doc);
        if ((r == 0) != (t->want != NULL)) {
            dump("error", &rep.errors);
            fail_msg("row %zu (%s): result %d", i, t->given, r);
        }
        struct lstrv *reported = t->want ? &rep.notes : &rep.errors;
        if (t->report) {
            if (reported->n != 1 || strcmp(reported->v[0], t->report) != 0) {
                dump("error", &rep.errors);
                dump("note", &rep.notes);
                fail_msg("row %zu (%s): expected the report %s", i, t->given, t->report);
            }
        } else {
            assert_int_equal(rep.errors.n + rep.notes.n, 0);
        }
        if (t->want) {
            json_t *want = J(t->want);
            if (!json_equal(doc, want)) {
                char *got = ljson_dump(doc);
                fail_msg("row %zu (%s): got %s", i, t->given, got);
            }
            /* a fixed point: normalising it again changes nothing and refuses nothing */
            json_t *again = NULL;
            struct reports rep2 = {LSTRV_INIT, LSTRV_INIT};
            assert_int_equal(createopts_normalize(doc, "", collect, &rep2, &again), 0);
            assert_true(json_equal(again, doc));
            assert_int_equal(rep2.errors.n, 0);
            json_decref(again);
            lstrv_free(&rep2.errors);
            lstrv_free(&rep2.notes);
            json_decref(want);
            json_decref(doc);
        }
        lstrv_free(&rep.errors);
        lstrv_free(&rep.notes);
        json_decref(given);
    }
}

/* Every problem is reported, not just the first; nothing is returned. */
static void test_all_problems(void **state)
{
    json_t *given = J("{'HostConfig':{'Memory':'lots','Privileged':'maybe','PortBindings':"
                      "{'80/tcp':[{'HostPort':{}}]}},'Env':'x'}");
    struct reports rep = {LSTRV_INIT, LSTRV_INIT};
    json_t *doc = NULL;
    assert_int_equal(
        createopts_normalize(given, "modules.x.settings.createOptions", collect, &rep, &doc),
        -EINVAL);
    assert_null(doc);
    assert_int_equal(rep.errors.n, 4);
    assert_string_equal(rep.errors.v[0], "modules.x.settings.createOptions.HostConfig.Memory: "
                                         "expected an integer, got \"lots\"");
    assert_string_equal(rep.errors.v[2],
                        "modules.x.settings.createOptions.HostConfig.PortBindings.80/tcp[0]."
                        "HostPort: expected a string, got an object");
    lstrv_free(&rep.errors);
    lstrv_free(&rep.notes);
    json_decref(given);

    /* not an object at all; and no report function is fine */
    given = J("[1]");
    assert_int_equal(createopts_normalize(given, "createOptions", NULL, NULL, &doc), -EINVAL);
    json_decref(given);
}

static void test_accessors(void **state)
{
    json_t *doc = J("{'HostConfig':{'NetworkMode':'host','Privileged':true,'Memory':5},"
                    "'Labels':{'a.b':'c'}}");
    assert_string_equal(createopts_string(doc, "HostConfig.NetworkMode"), "host");
    assert_true(createopts_bool(doc, "HostConfig.Privileged", false));
    assert_false(createopts_bool(doc, "HostConfig.ReadonlyRootfs", false));
    assert_int_equal(createopts_int(doc, "HostConfig.Memory", 0), 5);
    assert_int_equal(createopts_int(doc, "HostConfig.NetworkMode", -1), -1); /* not an integer */
    assert_null(createopts_get(doc, "HostConfig.Missing.Deeper"));
    assert_null(createopts_get(doc, "HostConfig."));
    assert_null(createopts_string(doc, "Labels.a.b")); /* map keys are not fields */

    /* building: objects made on the way, arrays appended, values set */
    json_t *ep = createopts_object(doc, "NetworkingConfig.EndpointsConfig");
    assert_non_null(ep);
    assert_ptr_equal(createopts_get(doc, "NetworkingConfig.EndpointsConfig"), ep);
    json_t *add = J("['/a:/a','/b:/b']");
    assert_int_equal(createopts_append(doc, "HostConfig.Binds", add), 0);
    assert_int_equal(createopts_append(doc, "HostConfig.Binds", add), 0);
    assert_int_equal(json_array_size(createopts_get(doc, "HostConfig.Binds")), 4);
    assert_int_equal(createopts_append(doc, "HostConfig.NetworkMode", add), -EINVAL);
    assert_int_equal(createopts_set(doc, "HostConfig.RestartPolicy.Name", json_string("no")), 0);
    assert_string_equal(createopts_string(doc, "HostConfig.RestartPolicy.Name"), "no");
    assert_int_equal(createopts_set(doc, "Image", json_string("img:1")), 0);
    assert_string_equal(createopts_string(doc, "Image"), "img:1");
    /* something that is not an object in the way */
    assert_null(createopts_object(doc, "HostConfig.NetworkMode.X"));
    assert_int_equal(createopts_set(doc, "HostConfig.Memory.X", json_true()), -EINVAL);
    json_decref(add);
    json_decref(doc);

    assert_true(createopts_known("HostConfig.Privileged"));
    assert_true(createopts_known("HostConfig.Mounts"));
    assert_true(createopts_known("NetworkingConfig.EndpointsConfig"));
    assert_false(createopts_known("HostConfig.privileged")); /* the API's spelling */
    assert_false(createopts_known("HostConfig.FancyNewThing"));
    assert_false(createopts_known("Labels.x")); /* into a map */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_coercions),
        cmocka_unit_test(test_all_problems),
        cmocka_unit_test(test_accessors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
