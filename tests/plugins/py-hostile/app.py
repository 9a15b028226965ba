"""A hostile Python allocator: `MODE` picks what `allocate` tries (the runtime's WASI tests).

- probe: tries files, the environment, sockets, clocks and randomness, and answers an error
  whose text is a JSON report of what each attempt got (the test reads it);
- sleep: sleeps an hour, then answers the lowest free address;
- read: answers an error holding the first line of the file PATH (or why it could not);
- write: tries to create a file in the directory DIR;
- escape: tries to leave the directory DIR or change it (`..`, a symbolic link in it, remove,
  mkdir, rename) and to read /etc/passwd, and answers an error with a JSON report;
- hoard: opens the file PATH over and over, keeping every one open;
- shout: prints a megabyte, then "THE END", then raises;
- exit: calls sys.exit(3);
- traceback: raises an uncaught exception (the trap message should carry the traceback);
- spin: loops forever;
- hog: allocates memory until stopped.
"""

import json
import os
import random
import socket
import sys
import time

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import config, pool_view, types


def attempt(action):
    try:
        return {"ok": repr(action())}
    except BaseException as e:  # noqa: BLE001 - the report names whatever was raised
        return {"error": type(e).__name__}


def lowest_free():
    for block in pool_view.occupancy():
        if block.lowest_free is not None:
            return types.IpAddress_V4(block.lowest_free)
    raise Err("no free address")


def connect():
    with socket.create_connection(("127.0.0.1", 22), timeout=1):
        return "connected"


def resolve():
    return socket.getaddrinfo("localhost", 80)


def udp():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        return s.sendto(b"x", ("127.0.0.1", 9))


def escape(base):
    return {
        "dotdot": attempt(lambda: open(os.path.join(base, "..", "..", "etc", "passwd")).read(8)),
        "link": attempt(lambda: open(os.path.join(base, "link", "etc", "passwd")).read(8)),
        "passwd": attempt(lambda: open("/etc/passwd").read(8)),
        "remove": attempt(lambda: os.remove(os.path.join(base, "answer"))),
        "mkdir": attempt(lambda: os.mkdir(os.path.join(base, "new"))),
        "rename": attempt(
            lambda: os.rename(os.path.join(base, "answer"), os.path.join(base, "moved"))
        ),
        "listdir": attempt(lambda: sorted(os.listdir(base))),
    }


def probe():
    return {
        "file": attempt(lambda: open("/etc/passwd").read(64)),
        "listdir": attempt(lambda: os.listdir("/")),
        "environ": dict(os.environ),
        "cwd": attempt(os.getcwd),
        "socket": attempt(connect),
        "resolve": attempt(resolve),
        "udp": attempt(udp),
        "time": time.time(),
        "random": random.Random(os.urandom(8)).random(),
        "urandom": os.urandom(4).hex(),
    }


class Allocator(exports.Allocator):
    def init(self) -> None:
        return None

    def allocate(self, pod: types.Pod) -> types.IpAddress:
        mode = config.get("MODE") or "probe"
        if mode == "probe":
            raise Err(json.dumps(probe(), sort_keys=True))
        if mode == "sleep":
            time.sleep(3600)
            return lowest_free()
        if mode == "read":
            path = config.get("PATH") or ""
            raise Err(json.dumps(attempt(lambda: open(path).readline().strip())))
        if mode == "write":
            target = os.path.join(config.get("DIR") or "", "written")
            raise Err(json.dumps(attempt(lambda: open(target, "w").write("x"))))
        if mode == "escape":
            raise Err(json.dumps(escape(config.get("DIR") or ""), sort_keys=True))
        if mode == "hoard":
            path = config.get("PATH") or ""
            kept = [open(path) for _ in range(100_000)]
            raise Err(f"kept {len(kept)} files open")
        if mode == "shout":
            for _ in range(1024):
                print("x" * 1023)
            print("THE END")
            raise RuntimeError("shouted")
        if mode == "exit":
            sys.exit(3)
        if mode == "traceback":
            return {}["no such key"]
        if mode == "spin":
            while True:
                pass
        if mode == "hog":
            hoard = []
            while True:
                hoard.append(bytearray(1 << 20))
        raise Err(f"unknown MODE {mode!r}")

    def plan(self) -> None:
        return None
