#!/usr/bin/env python3
"""make-fuzz-seeds.py — seed inputs for the hub's fuzz targets:
fuzz/corpus/hub-conn (a mode byte, then a client's MQTT stream; see fuzz-conn.c) and
fuzz/corpus/hub-message (the stored message form; see message.c).
Usage: src/hub/make-fuzz-seeds.py [corpus root, default fuzz/corpus]"""
import os
import struct
import sys

DEV = "fzdev"
OWN = f"devices/{DEV}/modules/fz"


def varint(n):
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def s(x):
    b = x.encode() if isinstance(x, str) else x
    return struct.pack(">H", len(b)) + b


def packet(first, body):
    return bytes([first]) + varint(len(body)) + body


def publish(topic, payload=b"", qos=0, pid=1, retain=False, dup=False):
    first = 0x30 | (qos << 1) | (1 if retain else 0) | (8 if dup else 0)
    body = s(topic) + (struct.pack(">H", pid) if qos else b"") + payload
    return packet(first, body)


def subscribe(pid, *filters):
    body = struct.pack(">H", pid) + b"".join(s(f) + bytes([q]) for f, q in filters)
    return packet(0x82, body)


def unsubscribe(pid, *filters):
    return packet(0xA2, struct.pack(">H", pid) + b"".join(s(f) for f in filters))


def puback(pid):
    return packet(0x40, struct.pack(">H", pid))


PING = b"\xc0\x00"
DISCONNECT = b"\xe0\x00"


def connect(client_id, user, password, clean=True, level=4, name="MQTT"):
    flags = 0xC0 | (2 if clean else 0)
    body = s(name) + bytes([level, flags]) + struct.pack(">H", 30) + s(client_id) + s(user) + s(password)
    return packet(0x10, body)


def events(bag, body=b"{}", qos=1, pid=1):
    return publish(f"{OWN}/messages/events/{bag}", body, qos, pid)


session = b"".join([
    subscribe(1, (f"{OWN}/inputs/#", 1), ("$iothub/twin/res/#", 0),
              ("$iothub/methods/POST/#", 1), ("$iothub/twin/PATCH/properties/desired/#", 1)),
    events("%24.on=o1&%24.mid=m1&%24.ct=application%2Fjson&%24.ce=utf-8&a=1", b'{"a":2}', 1, 2),
    events("%24.on=hi", b"prio", 1, 3),
    events("%24.on=o1&x=y", b"q0", 0),
    publish("$iothub/twin/GET/?$rid=1", b"", 1, 4),
    publish("$iothub/twin/PATCH/properties/reported/?$rid=2", b'{"r":1}', 1, 5),
    publish("$iothub/methods/res/200/?$rid=9", b'{"ok":true}', 0),
    PING,
    unsubscribe(6, f"{OWN}/inputs/#"),
    DISCONNECT,
])

conn_seeds = {
    "session": b"\x05" + session,
    "session-persistent": b"\x07" + session,
    "session-chunked": b"\x0d" + session,
    "session-noack": b"\x01" + session,
    "qos2": b"\x05" + publish(f"{OWN}/messages/events/%24.on=o1", b"x", 2, 7),
    "retain-dup": b"\x05" + publish(f"{OWN}/messages/events/%24.on=o1", b"r", 1, 8, retain=True, dup=True),
    "pubrel": b"\x05" + packet(0x62, b"\x00\x01"),
    "unauthorized-pub": b"\x05" + publish(f"devices/{DEV}/modules/other/messages/events/", b"x", 1, 9),
    "unauthorized-sub": b"\x05" + subscribe(1, ("#", 1), (f"devices/{DEV}/modules/other/inputs/#", 1)),
    "bad-bag": b"\x05" + events("=v&%zz=1", b"x"),
    "oversized": b"\x05" + b"\x32\x80\x80\x80\x01",
    "varint-5": b"\x05" + b"\x30\xff\xff\xff\xff\x01",
    "second-connect": b"\x05" + connect(f"{DEV}/fz", f"{DEV}.example.net/{DEV}/fz/?api-version=1", "x"),
    "connect-bad-token": b"\x00" + connect(f"{DEV}/fz", f"{DEV}.example.net/{DEV}/fz/?api-version=1",
                                           "SharedAccessSignature sr=x&sig=y&se=1"),
    "connect-level3": b"\x00" + connect("a", "u", "p", level=3),
    "connect-mqisdp": b"\x00" + connect("a", "u", "p", level=3, name="MQIsdp"),
    "connect-empty-id-persistent": b"\x00" + connect("", "u", "p", clean=False),
    "not-mqtt": b"\x00GET / HTTP/1.1\r\n\r\n",
    "many-filters": b"\x05" + subscribe(3, *[(f"{OWN}/inputs/i{i}", 1) for i in range(40)]),
    "puback-unknown": b"\x05" + puback(77) + PING,
    "twin-bad": b"\x05" + publish("$iothub/twin/PATCH/properties/reported/?$rid=3", b"[1,2", 1, 3)
                + publish("$iothub/twin/GET/", b"", 0),
}


def put16(n):
    return struct.pack("<H", n)


def message(source, sys_props, app, body, t=1767225600000):
    out = bytearray([1, len(sys_props)]) + put16(len(app)) + struct.pack("<q", t) + struct.pack("<I", len(body))
    out += put16(len(source)) + source.encode() + b"\0"
    for pid, v in sys_props:
        out += bytes([pid]) + put16(len(v)) + v.encode() + b"\0"
    for k, v in app:
        out += put16(len(k)) + k.encode() + b"\0" + put16(len(v)) + v.encode() + b"\0"
    return bytes(out + body)


msg_seeds = {
    "plain": message("/messages/modules/m/outputs/o", [], [], b"hello"),
    "props": message("/messages/modules/m/outputs/o", [(0, "mid"), (5, "application/json"), (6, "utf-8"), (16, "2026-01-01T00:00:00Z")],
                     [("a", "1"), ("empty", "")], b'{"a":1}'),
    "empty": message("", [], [], b""),
    "twin": message("/twinChangeNotifications", [(8, "d"), (9, "m"), (20, "twinChangeNotification")], [], b'{"version":2}'),
}


def write(dirname, seeds):
    os.makedirs(dirname, exist_ok=True)
    for name, data in seeds.items():
        path = os.path.join(dirname, "seed-" + name)
        with open(path, "wb") as f:
            f.write(data)


root = sys.argv[1] if len(sys.argv) > 1 else "fuzz/corpus"
write(os.path.join(root, "hub-conn"), conn_seeds)
write(os.path.join(root, "hub-message"), msg_seeds)
print(f"{len(conn_seeds)} hub-conn and {len(msg_seeds)} hub-message seeds in {root}")
