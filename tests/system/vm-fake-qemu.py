#!/usr/bin/env python3
# vm-fake-qemu.py — a stand-in for qemu-system-* in tests/system/vm-supervisor.sh: it takes
# ledge-vmm's real command line, serves QMP and the virtio-serial channel on the sockets it names,
# and plays a guest whose behaviour the test picks with $FAKE_QEMU_MODE:
#   good   the agent greets after $FAKE_QEMU_BOOT_S seconds; the guest API answers /status and
#          /deployment (with $FAKE_QEMU_DEPLOYMENT, a file, when set); poweroff/reboot events
#          behave as a guest would (SHUTDOWN + exit, RESET + greet again)
#   hang   the agent never greets (a hung boot); system_reset is counted
#   crash  exits with status 1 after one second
# hostfwd_add really listens on the host port and answers "guest-port N\n", so tests can check
# live forwards with real connections. Every QMP command is appended to $FAKE_QEMU_LOG.
# Test tooling only (the product never runs Python).
import json, os, socket, struct, sys, threading, time, zlib

args = sys.argv[1:]
mode = os.environ.get("FAKE_QEMU_MODE", "good")
boot_s = float(os.environ.get("FAKE_QEMU_BOOT_S", "0.5"))
log_path = os.environ.get("FAKE_QEMU_LOG")
deployment_file = os.environ.get("FAKE_QEMU_DEPLOYMENT")


def opt_values(name):
    return [args[i + 1] for i, a in enumerate(args) if a == name and i + 1 < len(args)]


def chardev_path(cid):
    for v in opt_values("-chardev"):
        parts = v.split(",")
        kv = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
        if kv.get("id") == cid:
            return kv.get("path")
    return None


def log(line):
    if log_path:
        with open(log_path, "a") as f:
            f.write(line + "\n")


for p in opt_values("-pidfile"):
    with open(p, "w") as f:
        f.write("%d\n" % os.getpid())
log("started mode=%s" % mode)
# What a guest's kernel would print on its serial console (a file chardev): one line.
console_path = chardev_path("console")
if console_path:
    with open(console_path, "a") as f:
        f.write("fake-qemu: the scripted guest's console (mode %s)\n" % mode)

if mode == "crash":
    time.sleep(1)
    sys.exit(1)


def listen(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.listen(1)
    return s


qmp_l = listen(chardev_path("qmp0"))
chan_l = listen(chardev_path("chan0"))
lock = threading.Lock()
qmp_conn = None
chan_conn = None
forwards = {}  # (proto, addr, port) -> listening socket
booted = threading.Event()


def received(c):
    """What the peer sends on c, chunk by chunk, until it closes (or the connection fails)."""
    while True:
        try:
            d = c.recv(65536)
        except OSError:
            return
        if not d:
            return
        yield d


def qmp_send(obj):
    with lock:
        if qmp_conn:
            try:
                qmp_conn.sendall((json.dumps(obj) + "\r\n").encode())
            except OSError:
                pass


def event(name, data=None):
    qmp_send({"event": name, "data": data or {}, "timestamp": {"seconds": int(time.time()), "microseconds": 0}})


def frame(t, conn, payload=b""):
    h = struct.pack(">HBBII", 0x4C56, 1, t, conn, len(payload)) + struct.pack(">I", zlib.crc32(payload))
    return h + struct.pack(">I", zlib.crc32(h)) + payload


def chan_send(t, conn, payload=b""):
    with lock:
        if chan_conn:
            try:
                chan_conn.sendall(frame(t, conn, payload))
            except OSError:
                pass


def greet():
    chan_send(1, 0, json.dumps({"reset": True, "role": "guest", "agent": "fake", "bootId": "b%d" % time.time(),
                                "hostname": "fake", "kernel": "fake-kernel", "arch": "x86_64",
                                "address": "10.0.2.15"}).encode())


def boot():
    """The guest boots; the agent greets unless the boot hangs."""
    booted.clear()
    if mode == "hang":
        return
    def later():
        time.sleep(boot_s)
        booted.set()
        greet()
    threading.Thread(target=later, daemon=True).start()


def serve_forward(key, srv, guest_port):
    while True:
        try:
            c, _ = srv.accept()
        except OSError:
            return
        try:
            c.sendall(b"guest-port %d\n" % guest_port)
        finally:
            c.close()


def forward_key(host):
    """"tcp:127.0.0.1:8080" (hostfwd_add's host side, hostfwd_remove's argument) -> forwards' key."""
    proto, addr, port = host.split(":")
    return (proto, addr or "0.0.0.0", int(port))


def hmp(line):
    words = line.split()
    if not words:
        return ""
    if words[0] == "info" and words[1:] == ["usernet"]:
        out = "Hub -1 (net0):\r\n  Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ\r\n"
        for (proto, addr, port), (_, gp) in forwards.items():
            out += "  %s[HOST_FORWARD]  10 %15s %5d       10.0.2.15 %5d     0     0\r\n" % (proto.upper(), addr, port, gp)
        return out
    if words[0] == "hostfwd_add":
        spec = words[-1]
        host, guest = spec.split("-")
        gport = int(guest.split(":")[-1])
        key = forward_key(host)
        if key in forwards:
            return "Could not set up host forwarding rule '%s'\r\n" % spec
        try:
            srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            srv.bind((key[1], key[2]))
            srv.listen(8)
        except OSError:
            return "Could not set up host forwarding rule '%s'\r\n" % spec
        forwards[key] = (srv, gport)
        threading.Thread(target=serve_forward, args=(key, srv, gport), daemon=True).start()
        return ""
    if words[0] == "hostfwd_remove":
        key = forward_key(words[-1])
        if key not in forwards:
            return "host forwarding rule for %s not found\r\n" % words[-1]
        srv, _ = forwards.pop(key)
        try:
            srv.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread, frees the port
        except OSError:
            pass
        srv.close()
        return "host forwarding rule for %s removed\r\n" % words[-1]
    return ""


def shutdown(reason):
    event("SHUTDOWN", {"guest": reason.startswith("guest"), "reason": reason})
    log("exit " + reason)
    time.sleep(0.1)
    os._exit(0)


def reset():
    event("RESET", {"guest": True, "reason": "guest-reset"})
    boot()


def qmp_loop():
    global qmp_conn
    while True:
        c, _ = qmp_l.accept()
        with lock:
            qmp_conn = c
        qmp_send({"QMP": {"version": {"qemu": {"major": 7, "minor": 2, "micro": 0}}, "capabilities": []}})
        buf = b""
        for d in received(c):
            buf += d
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if not line.strip():
                    continue
                msg = json.loads(line)
                cmd = msg.get("execute")
                a = msg.get("arguments") or {}
                log("qmp " + cmd + (" " + a["command-line"] if "command-line" in a else ""))
                ret = {}
                if cmd == "human-monitor-command":
                    ret = hmp(a.get("command-line", ""))
                elif cmd == "system_reset":
                    reset()
                elif cmd == "quit":
                    qmp_send({"return": {}, "id": msg.get("id")})
                    shutdown("host-qmp-quit")
                elif cmd == "system_powerdown" and mode == "good":
                    threading.Timer(0.2, shutdown, args=("guest-shutdown",)).start()
                qmp_send({"return": ret, "id": msg.get("id")})
        with lock:
            qmp_conn = None


def http_answer(req):
    line = req.split(b"\r\n", 1)[0].decode()
    path = line.split()[1] if len(line.split()) > 1 else "/"
    if path.startswith("/status"):
        body, status = json.dumps({"containerEngineConnected": True, "version": "fake"}), "200 OK"
    elif path.startswith("/deployment") and deployment_file and os.path.exists(deployment_file):
        body, status = open(deployment_file).read(), "200 OK"
    else:
        body, status = json.dumps({"message": "no deployment has been applied"}), "404 Not Found"
    return ("HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
            % (status, len(body), body)).encode()


def chan_loop():
    global chan_conn
    while True:
        c, _ = chan_l.accept()
        with lock:
            chan_conn = c
        if booted.is_set():
            greet()  # an agent that was already up answers a new host at once (adoption)
        conns = {}
        buf = b""
        for d in received(c):
            buf += d
            while len(buf) >= 20:
                magic, ver, t, conn, n = struct.unpack(">HBBII", buf[:12])
                if magic != 0x4C56 or len(buf) < 20 + n:
                    break
                payload = buf[20:20 + n]
                buf = buf[20 + n:]
                if t == 1:  # HELLO
                    h = json.loads(payload)
                    log("hello " + json.dumps(h, sort_keys=True))
                    if h.get("reset") and booted.is_set():
                        chan_send(1, 0, json.dumps({"reset": False, "role": "guest", "agent": "fake"}).encode())
                elif t == 9:  # EVENT
                    ev = json.loads(payload).get("event")
                    log("event " + ev)
                    if ev == "poweroff" and mode == "good":
                        threading.Timer(0.3, shutdown, args=("guest-shutdown",)).start()
                    elif ev == "reboot":
                        threading.Timer(0.3, reset).start()
                elif t == 2:  # OPEN
                    conns[conn] = b""
                elif t == 3 and conn in conns:  # DATA: an HTTP request to the guest API
                    conns[conn] += payload
                    if b"\r\n\r\n" in conns[conn]:
                        chan_send(3, conn, http_answer(conns[conn]))
                        chan_send(5, conn)
                        chan_send(6, conn)
                        del conns[conn]
                elif t == 6:
                    conns.pop(conn, None)
                elif t == 10:  # PING
                    chan_send(11, 0, payload)
        with lock:
            chan_conn = None


threading.Thread(target=qmp_loop, daemon=True).start()
threading.Thread(target=chan_loop, daemon=True).start()
boot()
while True:
    time.sleep(3600)
