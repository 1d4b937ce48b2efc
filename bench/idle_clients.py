#!/usr/bin/env python3
"""Logs N clients in to a proxy (raw protocol: startup and SCRAM-SHA-256, md5 or trust
authentication), optionally runs one query on each, holds them idle, and prints what the
proxy's resident memory (VmRSS of /proc/PID/status) grew by.

Usage: bench/idle_clients.py --addr HOST:PORT --pid PID --clients N [--user app]
       [--password app-pass] [--database appdb] [--query] [--concurrency 64] [--settle 5]

Prints one line:
  clients=N query=0 login_seconds=S rss_before_kb=B rss_idle_kb=I per_client_bytes=P
(rss_idle_kb: after every client logged in and --settle seconds passed; per client: the
difference over N). Exits 1 if a login or query failed, 2 on bad arguments.

Only the standard library: each client is a socket and a few bytes here.
"""

import argparse
import asyncio
import base64
import hashlib
import hmac
import os
import resource
import struct
import sys
import time

PROTOCOL_3_0 = 196608


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def message(kind, body):
    return kind + struct.pack("!I", len(body) + 4) + body


async def receive(reader):
    """One backend message: (type byte, body)."""
    header = await reader.readexactly(5)
    length = struct.unpack("!I", header[1:])[0]
    return header[:1], await reader.readexactly(length - 4)


def error_text(body):
    fields = dict((f[:1], f[1:].decode(errors="replace")) for f in body.split(b"\0") if f)
    return f"{fields.get(b'C', '?')} {fields.get(b'M', '')}"


async def expect_auth(reader):
    kind, body = await receive(reader)
    if kind == b"E":
        raise RuntimeError(error_text(body))
    if kind != b"R":
        raise RuntimeError(f"expected an authentication request, got {kind!r}")
    return struct.unpack("!I", body[:4])[0], body[4:]


async def scram(reader, writer, password):
    nonce = base64.b64encode(os.urandom(18)).decode()
    first_bare = f"n=,r={nonce}"
    first = ("n,," + first_bare).encode()
    writer.write(message(b"p", b"SCRAM-SHA-256\0" + struct.pack("!I", len(first)) + first))
    code, server_first = await expect_auth(reader)
    if code != 11:
        raise RuntimeError(f"expected SASLContinue, got authentication code {code}")
    server_first = server_first.decode()
    attrs = dict(item.split("=", 1) for item in server_first.split(","))
    salted = hashlib.pbkdf2_hmac(
        "sha256", password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"])
    )
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()
    without_proof = f"c=biws,r={attrs['r']}"
    auth_message = f"{first_bare},{server_first},{without_proof}".encode()
    signature = hmac.digest(stored_key, auth_message, "sha256")
    proof = bytes(a ^ b for a, b in zip(client_key, signature))
    final = f"{without_proof},p={base64.b64encode(proof).decode()}".encode()
    writer.write(message(b"p", final))
    code, _ = await expect_auth(reader)
    if code != 12:
        raise RuntimeError(f"expected SASLFinal, got authentication code {code}")
    code, _ = await expect_auth(reader)
    return code


async def until_ready(reader):
    while True:
        kind, body = await receive(reader)
        if kind == b"E":
            raise RuntimeError(error_text(body))
        if kind == b"Z":
            return


async def log_in(args):
    host, port = args.addr.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    params = f"user\0{args.user}\0database\0{args.database}\0\0".encode()
    body = struct.pack("!I", PROTOCOL_3_0) + params
    writer.write(struct.pack("!I", len(body) + 4) + body)
    code, data = await expect_auth(reader)
    if code == 10:
        code = await scram(reader, writer, args.password)
    elif code == 5:
        inner = hashlib.md5((args.password + args.user).encode()).hexdigest()
        outer = hashlib.md5(inner.encode() + data[:4]).hexdigest()
        writer.write(message(b"p", f"md5{outer}\0".encode()))
        code, _ = await expect_auth(reader)
    if code != 0:
        raise RuntimeError(f"authentication not accepted (code {code})")
    await until_ready(reader)
    if args.query:
        writer.write(message(b"Q", b"SELECT 1\0"))
        await until_ready(reader)
    return reader, writer


async def main(args):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < args.clients + 64:
        print(f"the open file limit ({hard}) is too low for {args.clients} clients", file=sys.stderr)
        return 1
    before = rss_kb(args.pid)
    gate = asyncio.Semaphore(args.concurrency)

    async def one():
        async with gate:
            return await log_in(args)

    started = time.monotonic()
    results = await asyncio.gather(*(one() for _ in range(args.clients)), return_exceptions=True)
    took = time.monotonic() - started
    failed = [r for r in results if isinstance(r, BaseException)]
    for err in failed[:10]:
        print(f"login failed: {err!r}", file=sys.stderr)
    if failed:
        print(f"{len(failed)} of {args.clients} logins failed", file=sys.stderr)
        return 1
    await asyncio.sleep(args.settle)
    idle = rss_kb(args.pid)
    per_client = (idle - before) * 1024 // args.clients
    print(
        f"clients={args.clients} query={int(args.query)} login_seconds={took:.1f} "
        f"rss_before_kb={before} rss_idle_kb={idle} per_client_bytes={per_client}"
    )
    for _, writer in results:
        writer.close()
    return 0


def parse():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addr", required=True, help="the proxy, HOST:PORT")
    parser.add_argument("--pid", required=True, type=int, help="the proxy's process id")
    parser.add_argument("--clients", required=True, type=int)
    parser.add_argument("--user", default="app")
    parser.add_argument("--password", default="app-pass")
    parser.add_argument("--database", default="appdb")
    parser.add_argument("--query", action="store_true", help="run SELECT 1 on each client")
    parser.add_argument("--concurrency", type=int, default=64, help="logins at once")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds idle before reading")
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse())))
