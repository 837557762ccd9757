#!/usr/bin/env python3
# make-fuzz-seeds.py — writes the seed inputs of fuzz-db.c (small SQLite databases: sound, cut
# short, with a page overwritten, with the header destroyed) into fuzz/corpus/db/. Run from the
# repository root.
import os
import sqlite3

OUT = "fuzz/corpus/db"
os.makedirs(OUT, exist_ok=True)


def make(rows):
    path = os.path.join(OUT, ".tmp.db")
    for p in (path, path + "-wal", path + "-shm"):
        if os.path.exists(p):
            os.remove(p)
    db = sqlite3.connect(path)
    db.executescript("PRAGMA page_size=512; PRAGMA journal_mode=WAL;"
                     "CREATE TABLE items (id INTEGER PRIMARY KEY, body TEXT NOT NULL, extra TEXT);"
                     "CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT) WITHOUT ROWID;")
    db.executemany("INSERT INTO items VALUES (?, ?, 'x')", [(i, "b%03d" % i * 8) for i in range(1, rows + 1)])
    db.executemany("INSERT INTO kv VALUES (?, ?)", [("k%d" % i, "v" * i) for i in range(rows // 4)])
    db.commit()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    data = open(path, "rb").read()
    for p in (path, path + "-wal", path + "-shm"):
        if os.path.exists(p):
            os.remove(p)
    return data


def seed(name, data):
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)


small = make(12)
seed("sound-small", small)
big = make(60)
seed("sound", big)
seed("truncated", big[: len(big) // 2])
seed("cut-mid-page", big[: len(big) // 2 + 100])
mid = bytearray(big)
mid[512 * 4 : 512 * 5] = b"\x5a" * 512
seed("page-overwritten", bytes(mid))
head = bytearray(small)
head[0:16] = b"not a database!!"
seed("bad-header", bytes(head))
seed("empty", b"")
