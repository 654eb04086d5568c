"""Canonical keys: the fitness cache's key, equal for trees that compute the same function.

`canonical_key(tree)` tries, in order:

1. ``s1:`` + sympy's normal form (`symbolic`), computed in a persistent child process so that
   a blow-up (square(square(...)) of a long sum) is cut off after `timeout` seconds and the
   caller never hangs; trees above `SYMPY_MAX_NODES` skip this step;
2. ``t1:`` + the structural normal form (`structural`);
3. ``t0:`` + the tree's own infix text.

Each candidate key is accepted only when its normal form agrees with the tree on the check grid
(`keycheck`), so two trees sharing a key agree there within relative 1e-9.  Keys are memoized
in an LRU dict.  sympy is imported only by the child: importing this module costs nothing.

`scale_free_key(tree)` is the variant a calibrated run keys by: ``s2p:`` + the normal form without its
positive rational content (`symbolic.scale_free_key`), so c·tree and tree share it for every c > 0; when
that step fails it is the tree's `canonical_key`, which keeps the scale -- a miss, never a wrong hit.

Note: a tree whose sympy step timed out gets its structural key, so under heavy load the same
function can (rarely) get two keys -- a cache miss, never a wrong hit.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

from worker.cores import usable_cores
from worker.lossexpr import keycheck, structural
from worker.lossexpr.infix import to_infix
from worker.lossexpr.tree import Node

#: Trees larger than this skip sympy: GLO's trees are small, and cancel() on a large rational
#: expression can take minutes.  Measured: a 30-node tree takes ~10-50 ms.
SYMPY_MAX_NODES = 64
#: How long the child may take to import sympy before it is presumed broken.
STARTUP_TIMEOUT = 60.0
CACHE_SIZE = 65_536
#: Uncached trees in one `canonical_keys` batch from which the further helper processes are started.
PARALLEL_FROM = 32

_cache: OrderedDict[Node, str] = OrderedDict()
_scale_free_cache: OrderedDict[Node, str] = OrderedDict()
_cache_lock = threading.Lock()


def canonical_key(tree: Node, timeout: float = 5.0, server: "_SymbolicServer | None" = None) -> str:
    """The canonical key of `tree` (see the module docstring); never takes much over `timeout`.
    `server`: which helper process computes it (the first one unless `canonical_keys` shares them out)."""
    with _cache_lock:
        if tree in _cache:
            _cache.move_to_end(tree)
            return _cache[tree]
    key = None
    if tree.size() <= SYMPY_MAX_NODES:
        key = (server or _SERVER).key(tree, timeout)
    if key is None:
        key = structural_key(tree)
    with _cache_lock:
        _cache[tree] = key
        if len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return key


def canonical_keys(trees: Sequence[Node], timeout: float = 5.0) -> list[str]:
    """`canonical_key` of each tree, the ones not yet memoized computed by up to `POOL_SIZE` helper processes
    at once (a thread each, waiting on its process): a generation's keys in about 1/POOL_SIZE of the time.

    Why: each key is a few ms of sympy in the helper while the caller waits; a search or a scheduler that
    has a whole batch of trees in hand can keep every core busy instead.  Each tree's key is the same
    whichever process computes it (the same deterministic pipeline), so only the wall time changes."""
    with _cache_lock:
        todo = [t for t in dict.fromkeys(trees) if t not in _cache and t.size() <= SYMPY_MAX_NODES]
    helpers = [server for server in _SERVERS if server.started()]
    if len(todo) >= PARALLEL_FROM and len(helpers) < len(_SERVERS):
        # A helper's start (importing sympy, ~0.5 s) costs more than it saves on a small batch: the others
        # start in the background on the first large one, which the running helper computes, and share
        # from the next batch on.  Small runs (tests, make demo) never start them.
        start_helpers()
    if len(todo) > 1 and len(helpers) > 1:
        shares = [(server, todo[i::len(helpers)]) for i, server in enumerate(helpers)]
        workers = [threading.Thread(target=_compute_share, args=(share, timeout, server), name="glo-canonical-key",
                                    daemon=True) for server, share in shares if share]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    return [canonical_key(t, timeout) for t in trees]


def scale_free_key(tree: Node, timeout: float = 5.0) -> str:
    """The key under which trees that differ by a positive constant factor meet (module doc): sympy's
    scale-free normal form when it is sound on the grid, else `canonical_key(tree)` (scale kept)."""
    with _cache_lock:
        if tree in _scale_free_cache:
            _scale_free_cache.move_to_end(tree)
            return _scale_free_cache[tree]
    key = _SERVER.key(tree, timeout, scale_free=True) if tree.size() <= SYMPY_MAX_NODES else None
    if key is None:
        key = canonical_key(tree, timeout)
    with _cache_lock:
        _scale_free_cache[tree] = key
        if len(_scale_free_cache) > CACHE_SIZE:
            _scale_free_cache.popitem(last=False)
    return key


def start_helpers() -> None:
    """Start every helper process now, not on the first large batch (for a caller that times their start-up
    apart, like `make bench`)."""
    for server in _SERVERS:
        server.start_in_background()


def _compute_share(trees: list[Node], timeout: float, server: "_SymbolicServer") -> None:
    for tree in trees:
        canonical_key(tree, timeout, server)


def structural_key(tree: Node) -> str:
    """``t1:`` + the structural normal form if it is sound on the grid, else ``t0:`` + infix."""
    nf = structural.normal_form(tree)
    values = structural.evaluate_expr(nf, keycheck.XS, keycheck.YS)
    if keycheck.same_values(keycheck.tree_on_grid(tree), values):
        return "t1:" + nf.text
    return "t0:" + to_infix(tree)


def clear_cache() -> None:
    with _cache_lock:
        _cache.clear()
        _scale_free_cache.clear()


class _SymbolicServer:
    """One child `python -m worker.lossexpr.symbolic`, restarted after a timeout or crash.

    A plain subprocess (not multiprocessing) so it works from any thread and never re-imports
    the caller's `__main__`.  Calls are serialized by a lock.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._ready = False
        self._buf = b""
        self._broken = False  # the child cannot start (e.g. no sympy): stop trying

    def _start(self) -> None:
        root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        env["PYTHONHASHSEED"] = "0"
        env["OPENBLAS_NUM_THREADS"] = env["OMP_NUM_THREADS"] = "1"
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "worker.lossexpr.symbolic"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
        )
        self._ready = False
        self._buf = b""

    def started(self) -> bool:
        """A child is running (or starting): it can take keys without a start-up on the caller's time."""
        return self._proc is not None and self._proc.poll() is None

    def start_in_background(self) -> None:
        """Start the child now (its sympy import runs while the caller goes on); its first key waits for it."""
        with self._lock:
            if not self._broken and not self.started():
                self._start()

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def _readline(self, deadline: float) -> bytes | None:
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line

    def key(self, tree: Node, timeout: float, scale_free: bool = False) -> str | None:
        with self._lock:
            if self._broken:
                return None
            for _attempt in range(2):  # a child that died since the last call gets one restart
                if self._proc is None or self._proc.poll() is not None:
                    self._start()
                result, alive = self._ask(tree, timeout, scale_free)
                if alive:
                    return result
                if result == "timeout":
                    return None
            return None

    def _ask(self, tree: Node, timeout: float, scale_free: bool = False) -> tuple[str | None, bool]:
        """(key or None, child still usable); a timed-out child is killed and replaced."""
        assert self._proc is not None and self._proc.stdin is not None
        if not self._ready:
            if self._readline(time.monotonic() + STARTUP_TIMEOUT) != b"ready":
                self.stop()
                self._broken = True
                return None, False
            self._ready = True
        try:
            request = {"scale_free": tree.to_json()} if scale_free else tree.to_json()
            self._proc.stdin.write(json.dumps(request).encode() + b"\n")
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError):
            self.stop()
            return None, False
        line = self._readline(time.monotonic() + timeout)
        if line is None:
            timed_out = self._proc.poll() is None
            self.stop()
            if timed_out:
                self._start()  # warm up the replacement in the background
                return "timeout", False
            return None, False
        try:
            key = json.loads(line)["key"]
        except (ValueError, KeyError, TypeError):
            return None, True
        return (key if isinstance(key, str) else None), True


    def forget(self) -> None:
        """In a forked child: drop the parent's process and lock without touching them."""
        self._lock = threading.Lock()
        self._proc = None
        self._ready = False
        self._buf = b""


#: Helper processes `canonical_keys` shares a batch among: one per core, at most two (the caller's own
#: work and the machine's other processes want the rest); the first starts on the first key, the others
#: once a batch of `PARALLEL_FROM` uncached trees shows that the run is large enough to pay for them.
POOL_SIZE = max(1, min(2, usable_cores()))
_SERVERS = [_SymbolicServer() for _ in range(POOL_SIZE)]
_SERVER = _SERVERS[0]
for _server in _SERVERS:
    atexit.register(_server.stop)
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_server.forget)
