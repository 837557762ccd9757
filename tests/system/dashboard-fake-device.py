#!/usr/bin/env python3
# dashboard-fake-device.py — a stand-in for another ledge's dashboard (tests/system/dashboard.sh's
# dead device): TLS on 127.0.0.1:PORT with CERT and KEY, answering GET /api/systeminfo (so it can
# be added, its key pinned) while the file HANG does not exist; once it does, every connection is
# accepted and never answered (a device that stopped answering: the fleet page's timeout).
import json
import os
import socket
import ssl
import sys
import threading
import time

port, cert, key, hang = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
INFO = json.dumps({"deviceId": "fake-device", "version": "0.0.0"}).encode()


def serve(conn):
    try:
        if os.path.exists(hang):
            time.sleep(120)  # holds the connection, says nothing
            return
        with ctx.wrap_socket(conn, server_side=True) as s:
            s.settimeout(10)
            req = b""
            while b"\r\n\r\n" not in req:
                piece = s.recv(4096)
                if not piece:
                    return
                req += piece
            ok = req.startswith(b"GET /api/systeminfo ")
            body = INFO if ok else b'{"message": "not here"}'
            s.sendall(b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                      b"Connection: close\r\n\r\n" % (200 if ok else 404, b"OK" if ok else b"Not Found",
                                                      len(body)) + body)
    except (OSError, ssl.SSLError):
        pass
    finally:
        conn.close()


srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", port))
srv.listen(64)
while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
