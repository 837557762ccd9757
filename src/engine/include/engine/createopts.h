/* createopts.h — createOptions as IoT Edge reads them: a typed model of the Docker Engine API's
 * ContainerCreate body (Config, HostConfig, NetworkingConfig and everything nested), held as a
 * schema table, and a normaliser that coerces a user's document the way edgeAgent's
 * Newtonsoft.Json does into Docker.DotNet's typed model. Engine-neutral and pure (no I/O, no
 * logging): the docker backend sends the normalised document, the oci engine reads it to build
 * its runtime config. docs/manifest.md says what is coerced and what is refused. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

/* A finding at a JSON path: error (the document is refused) or a note (accepted as it is). */
typedef void (*createopts_report_fn)(void *ud, bool error, const char *path, const char *msg);

/* Normalise a ContainerCreate document (an object). The result is a new document in the API's
 * spelling and types:
 *   - field names match case-insensitively and are sent as the API spells them;
 *   - booleans: true/false, strings holding them in any case ("true", " False "), numbers (0 is
 *     false); integers: integers in the field's range, numbers with a fraction rounded to the
 *     nearest (even), strings holding a decimal integer ("512", "-1"); strings: strings, numbers
 *     as their decimal text (80 -> "80"), booleans as "true"/"false";
 *   - Cmd, Entrypoint and Shell given as one string become a one-element array (as dockerd's own
 *     decoding does); null values are left out (as Docker.DotNet omits them);
 *   - map keys (Labels, Sysctls, ExposedPorts, PortBindings, ...) are kept as given;
 *   - fields the model does not know are kept as given (the engine decides) and noted.
 * Every value that cannot be coerced is reported as an error at its path ("<path>.HostConfig.
 * Memory": "expected an integer, got \"lots\""), and so is a field given twice in different
 * spellings; then -EINVAL and nothing is returned. path prefixes every report ("" for none).
 * Normalising a normalised document changes nothing. -ENOMEM on allocation failure. */
int createopts_normalize(const json_t *given, const char *path, createopts_report_fn report,
                         void *ud, json_t **ret);

/* Accessors over a normalised document: a dotted path of field names in the API's spelling
 * ("HostConfig.NetworkMode"); map keys are not path elements. Absent (or of another type):
 * NULL / dflt. */
const json_t *createopts_get(const json_t *doc, const char *fields);
const char *createopts_string(const json_t *doc, const char *fields);
bool createopts_bool(const json_t *doc, const char *fields, bool dflt);
int64_t createopts_int(const json_t *doc, const char *fields, int64_t dflt);

/* Building on a normalised document (the engines' merges). The object at fields, created with
 * the objects above it when absent; NULL on ENOMEM or when something else is in the way (which a
 * normalised document never has). */
json_t *createopts_object(json_t *doc, const char *fields);
/* Set a field (steals value). -ENOMEM, or -EINVAL when an object above it cannot be made. */
int createopts_set(json_t *doc, const char *fields, json_t *value);
/* Append the strings of array add to the array at fields (created when absent). */
int createopts_append(json_t *doc, const char *fields, const json_t *add);

/* Does the model know this field path (for engines that refuse what they cannot honour)? */
bool createopts_known(const char *fields);
