#!/usr/bin/env python3
"""Long-lived Sonic runner: loads Sonic once per GPU and renders tasks one at a time.

Spoken to over stdio JSON lines by the `worker` infer backend (protocol version 1, see
ops/sonic/README.md, the reference). Reused by the Cog predictor (ops/sonic/predict.py) through
`SonicRunner`, so both serve Sonic the same way.

Written against jixiaozhong/Sonic at the commit pinned in ops/sonic/SONIC_COMMIT
(51a74aec29e100d1505b97da7c03e4db6411dcb9). What that code does and this file works around:
- `Sonic.config` is a class attribute (an OmegaConf DictConfig) that every `process()` call
  mutates (`seed`, `num_inference_steps`, `motion_bucket_scale`): the runner restores it to the
  snapshot taken after load before each task, so no task's values leak into the next.
- `process()` only sets `config.seed` under `if seed:`, which drops seed 0; the runner sets
  `config.seed` itself (0 included) and `process()` then seeds from it.
- `preprocess()` raises UnboundLocalError ('bbox_s') when it finds no face; `process()`
  returns -1 without raising when its own detection finds none.
- at min_resolution 1024 Sonic fails with "CUDA error: invalid configuration argument", the same
  way every time: reported as INFERENCE_FAILED (retried once by the stage), not CUDA_ERROR.
- `process()` muxes with `os.system(ffmpeg ...)`: the exit code is ignored (the runner checks
  the output file), and ffmpeg inherits stdin (the runner moves the protocol off fd 0 so ffmpeg
  cannot eat request lines).

Python 3.10+, standard library only besides Sonic itself.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Callable

PROTOCOL = 1
EXIT_RESTART = 3
EXIT_FATAL = 2
SONIC_COMMIT_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "SONIC_COMMIT")

# characters that would break out of the double-quoted paths of Sonic's `os.system` ffmpeg line
UNSAFE_PATH_CHARS = set('"$`\\\n\r\0')


class RenderFailure(Exception):
    """A failed render with its protocol code; `restart` means the GPU state is no longer trusted."""

    def __init__(self, code: str, message: str, restart: bool = False):
        super().__init__(message)
        self.code = code
        self.message = message
        self.restart = restart


def classify(err: BaseException) -> RenderFailure:
    """Maps an exception raised by Sonic (or torch under it) to a protocol failure."""
    if isinstance(err, RenderFailure):
        return err
    names = {c.__name__ for c in type(err).__mro__}
    text = f"{type(err).__name__}: {err}"
    low = text.lower()
    if "OutOfMemoryError" in names or "out of memory" in low:
        return RenderFailure("GPU_OOM", text, restart=True)
    # a kernel launch with sizes the GPU cannot run: the same inputs fail the same way every time
    # (Sonic at min_resolution 1024), so not a CUDA fault worth retrying; the error is not sticky,
    # but the failed render's allocations are freed by a restart all the same
    if "invalid configuration argument" in low:
        return RenderFailure(
            "INFERENCE_FAILED",
            f"{type(err).__name__}: the GPU refused a kernel launch (invalid configuration argument) for these"
            " inputs; Sonic does so at min_resolution 1024, so lower it",
            restart=True,
        )
    if any(s in low for s in ("cuda error", "cudaerror", "device-side assert", "illegal memory access", "cublas_status", "cudnn_status")):
        return RenderFailure("CUDA_ERROR", text, restart=True)
    # Sonic's preprocess() on an image without a face: `bbox_s` is never assigned ("local variable
    # 'bbox_s' referenced before assignment" up to Python 3.10, "cannot access local variable" after)
    if isinstance(err, UnboundLocalError) and "bbox_s" in str(err):
        return RenderFailure("NO_FACE_DETECTED", f"no face found in the image ({text})")
    return RenderFailure("INFERENCE_FAILED", text)


def _check_request(req: Any) -> dict:
    """Validates a render request line; raises RenderFailure INPUT_INVALID."""

    def bad(msg: str) -> RenderFailure:
        return RenderFailure("INPUT_INVALID", msg)

    if not isinstance(req, dict) or req.get("type") != "render":
        raise bad("not a render request")
    if not isinstance(req.get("id"), str) or not req["id"]:
        raise bad("id must be a non-empty string")
    for key in ("image", "audio", "output", "work_dir"):
        v = req.get(key)
        if not isinstance(v, str) or not os.path.isabs(v):
            raise bad(f"{key} must be an absolute path")
        if UNSAFE_PATH_CHARS & set(v):
            raise bad(f"{key} holds a character Sonic's ffmpeg command line cannot quote")
    # Sonic derives its silent intermediate by replacing '.mp4' in the output path
    if not req["output"].endswith(".mp4") or req["output"].count(".mp4") != 1:
        raise bad("output must end in .mp4 and name .mp4 nowhere else")
    p = req.get("params")
    if not isinstance(p, dict):
        raise bad("params must be an object")

    def num(key: str, integer: bool) -> None:
        v = p.get(key)
        ok = isinstance(v, int) if integer else isinstance(v, (int, float))
        if isinstance(v, bool) or not ok:
            raise bad(f"params.{key} must be {'an integer' if integer else 'a number'}")

    num("min_resolution", True)
    num("inference_steps", True)
    num("dynamic_scale", False)
    num("expand_ratio", False)
    if not isinstance(p.get("crop"), bool):
        raise bad("params.crop must be a boolean")
    seed = p.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise bad("params.seed must be a non-negative integer or null")
    return req


def _config_keys(cfg: Any) -> list:
    return list(cfg.keys())


class SonicRunner:
    """Sonic loaded once; `render()` runs one task at a time with only that task's parameters.

    `render(request, on_progress)` takes the protocol's render request (a dict) and returns
    `{"output", "seed", "elapsed_s"}`; it raises RenderFailure (code, message, restart).
    `on_progress(fraction)` is called with the share of diffusion steps done (0..1).
    """

    def __init__(self, sonic_dir: str, device: int = 0, interpolate: bool = True):
        self.sonic_dir = os.path.abspath(sonic_dir)
        self.device = device
        self.interpolate = interpolate
        self.model: Any = None
        self.load_s = 0.0
        self._snapshot: dict = {}
        self._on_progress: Callable[[float], None] | None = None

    def load(self) -> None:
        """Imports Sonic from `sonic_dir` and loads its weights. Raises whatever Sonic raises."""
        # Sonic opens its config and weights by paths relative to the checkout
        sys.path.insert(0, self.sonic_dir)
        os.chdir(self.sonic_dir)
        t0 = time.monotonic()
        from sonic import Sonic  # noqa: PLC0415 - Sonic lives in the checkout named at run time

        self.model = Sonic(self.device, self.interpolate)
        self.load_s = time.monotonic() - t0
        cfg = type(self.model).config
        self._snapshot = {k: copy.deepcopy(cfg[k]) for k in _config_keys(cfg)}
        self._hook_progress()

    def sonic_version(self) -> str:
        """The Sonic commit of the checkout, or what the checkout says it is (the stand-in: 'standin')."""
        marker = getattr(sys.modules.get("sonic"), "SONIC_VERSION", None)
        if isinstance(marker, str):
            return marker
        try:
            git = ["git", "-C", self.sonic_dir, "rev-parse", "--show-toplevel", "HEAD"]
            out = subprocess.run(git, capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL)
            lines = out.stdout.split()
            # only the checkout's own repository, not one that happens to enclose it
            if out.returncode == 0 and len(lines) == 2 and os.path.realpath(lines[0]) == os.path.realpath(self.sonic_dir):
                return lines[1]
        except (OSError, subprocess.SubprocessError):
            pass
        return "unknown"

    def _hook_progress(self) -> None:
        """Wraps the diffusers pipeline's `progress_bar` (one bar over the inference steps) to report each step."""
        pipe = getattr(self.model, "pipe", None)
        original = getattr(pipe, "progress_bar", None)
        if original is None:
            return
        runner = self

        class Bar:
            def __init__(self, bar: Any, total: int):
                self._bar, self._total, self._n = bar, max(int(total or 0), 1), 0

            def __enter__(self):
                self._bar.__enter__()
                return self

            def __exit__(self, *exc):
                return self._bar.__exit__(*exc)

            def __iter__(self):
                for item in self._bar:
                    yield item
                    self._count(1)

            def update(self, n: int = 1):
                self._bar.update(n)
                self._count(n)

            def _count(self, n: int) -> None:
                self._n += n
                cb = runner._on_progress
                if cb is not None:
                    try:
                        cb(min(self._n / self._total, 1.0))
                    except Exception:  # noqa: BLE001 - a progress report never fails a render
                        pass

            def __getattr__(self, name: str):
                return getattr(self._bar, name)

        def progress_bar(iterable: Any = None, total: Any = None):
            bar = original(iterable=iterable, total=total)
            return Bar(bar, total if total is not None else len(iterable))

        pipe.progress_bar = progress_bar

    def _reset_config(self, seed: int | None) -> None:
        cfg = type(self.model).config
        for k in _config_keys(cfg):
            if k not in self._snapshot:
                del cfg[k]
        for k, v in self._snapshot.items():
            cfg[k] = copy.deepcopy(v)
        if seed is not None:
            # Sonic's process() only assigns config.seed `if seed:`; set it here so 0 counts
            cfg.seed = seed

    def render(self, request: dict, on_progress: Callable[[float], None] | None = None) -> dict:
        req = _check_request(request)
        p = req["params"]
        t0 = time.monotonic()
        model = self.model
        for key in ("image", "audio"):
            if not os.path.isfile(req[key]):
                raise RenderFailure("INFERENCE_FAILED", f"the {key} {req[key]} does not exist")
        os.makedirs(req["work_dir"], exist_ok=True)
        os.makedirs(os.path.dirname(req["output"]), exist_ok=True)
        # a previous attempt's file must not pass for this render's output
        if os.path.exists(req["output"]):
            os.remove(req["output"])
        self._reset_config(p["seed"])
        self._on_progress = on_progress
        try:
            face = model.preprocess(req["image"], expand_ratio=float(p["expand_ratio"]))
            if not face or int(face.get("face_num", 0)) <= 0:
                raise RenderFailure("NO_FACE_DETECTED", "no face found in the image")
            image = req["image"]
            if p["crop"]:
                base = os.path.splitext(os.path.basename(image))[0]
                image = os.path.join(req["work_dir"], f"{base}.crop.png")
                model.crop_image(req["image"], image, face["crop_bbox"])
            rc = model.process(
                image,
                req["audio"],
                req["output"],
                min_resolution=int(p["min_resolution"]),
                inference_steps=int(p["inference_steps"]),
                dynamic_scale=float(p["dynamic_scale"]),
                keep_resolution=False,
                seed=p["seed"],
            )
        except BaseException as err:  # noqa: BLE001 - every failure is reported with a code
            if isinstance(err, (KeyboardInterrupt, SystemExit)):
                raise
            raise classify(err) from err
        finally:
            self._on_progress = None
        if rc == -1:
            raise RenderFailure("NO_FACE_DETECTED", "no face found in the image (Sonic's process() returned -1)")
        # Sonic ignores ffmpeg's exit code: a missing or empty file is the only sign of a failed mux
        if not os.path.isfile(req["output"]) or os.path.getsize(req["output"]) == 0:
            raise RenderFailure("INFERENCE_FAILED", f"Sonic returned {rc} but wrote no video at {req['output']} (its ffmpeg mux failed?)")
        seed_used = int(type(model).config.seed)
        return {"output": req["output"], "seed": seed_used, "elapsed_s": round(time.monotonic() - t0, 3)}


class Protocol:
    """Writes protocol lines on the private copy of the original stdout, one JSON object per line."""

    def __init__(self, fd: int):
        self._out = os.fdopen(fd, "w", encoding="utf-8", buffering=1)
        self.lock = threading.Lock()

    def send(self, msg: dict) -> None:
        with self.lock:
            self.send_locked(msg)

    def send_locked(self, msg: dict) -> None:
        self._out.write(json.dumps(msg, separators=(",", ":")) + "\n")
        self._out.flush()


def _exit(code: int) -> None:
    try:
        sys.stderr.flush()
    finally:
        os._exit(code)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Long-lived Sonic runner (stdio JSON lines, protocol 1)")
    ap.add_argument("--sonic-dir", required=True, help="directory holding Sonic's sonic.py and checkpoints/")
    ap.add_argument("--device", type=int, default=0, help="CUDA device index")
    ap.add_argument("--no-interpolate", action="store_true", help="skip RIFE frame interpolation (12.5 fps output)")
    args = ap.parse_args(argv)

    # stdout carries only protocol lines: anything Sonic, torch, tqdm or a C extension prints goes
    # to stderr. stdin moves off fd 0 as well: Sonic's os.system(ffmpeg) would read it.
    proto = Protocol(os.dup(1))
    stdin_fd = os.dup(0)
    os.dup2(2, 1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    sys.stdout = sys.stderr
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    tasks: queue.Queue = queue.Queue()
    state = {"busy": False, "stopping": False}
    # `ready` is the first line out: request lines (which the stage sends only after it) wait in
    # `inbox` until Sonic is loaded, so that no `failed` line can precede `ready`
    loaded = threading.Event()
    inbox: queue.Queue = queue.Queue()

    def stop(*_: Any) -> None:
        # runs in the signal handler or the reader: only a flag once Sonic is loaded (the main loop
        # polls it; a queue call inside a signal handler could deadlock). While the weights load
        # there is nothing to finish, so exit at once rather than after a load of minutes.
        state["stopping"] = True
        if not loaded.is_set():
            print("sonic runner: shutdown while loading Sonic, exiting", file=sys.stderr)
            _exit(0)

    signal.signal(signal.SIGTERM, stop)

    def reader() -> None:
        # never blocks on anything but stdin, so `shutdown` and EOF are seen even while loading
        with os.fdopen(stdin_fd, "r", encoding="utf-8", errors="replace") as stdin:
            for line in stdin:
                if not line.strip():
                    continue
                msg: Any = None
                err: Exception | None = None
                try:
                    msg = json.loads(line)
                except ValueError as e:
                    err = e
                if isinstance(msg, dict) and msg.get("type") == "shutdown":
                    stop()
                    continue
                inbox.put((msg, err))
        # stdin closed: the stage is gone; never hold the GPU as an orphan
        print("sonic runner: stdin closed, exiting", file=sys.stderr)
        _exit(0)

    def dispatcher() -> None:
        loaded.wait()
        while True:
            msg, err = inbox.get()
            try:
                if err is not None:
                    raise err
                _check_request(msg)
            except (ValueError, RenderFailure) as e:
                rid = msg.get("id") if isinstance(msg, dict) and isinstance(msg.get("id"), str) else None
                text = e.message if isinstance(e, RenderFailure) else f"not a JSON line: {e}"
                proto.send({"type": "failed", "id": rid, "code": "INPUT_INVALID", "message": text, "restart": False})
                continue
            with proto.lock:
                if state["busy"] or state["stopping"]:
                    why = "a render is already running" if state["busy"] else "the runner is shutting down"
                    proto.send_locked({"type": "failed", "id": msg["id"], "code": "INPUT_INVALID", "message": f"{why}; one render at a time", "restart": False})
                    continue
                state["busy"] = True
            tasks.put(msg)

    # started before the weights load, so a stage that dies (or asks to stop) meanwhile does not
    # leave an orphan loading them
    threading.Thread(target=reader, name="stdin-reader", daemon=True).start()
    threading.Thread(target=dispatcher, name="dispatcher", daemon=True).start()

    runner = SonicRunner(args.sonic_dir, args.device, not args.no_interpolate)
    try:
        runner.load()
    except BaseException as err:  # noqa: BLE001 - any load failure is fatal, with its message
        print(f"sonic runner: loading Sonic failed: {type(err).__name__}: {err}", file=sys.stderr)
        proto.send({"type": "fatal", "message": f"{type(err).__name__}: {err}"})
        _exit(EXIT_FATAL)
    # a stop that raced the end of the load: the stage asked to stop, so no `ready`
    if state["stopping"]:
        _exit(0)
    proto.send({"type": "ready", "protocol": PROTOCOL, "pid": os.getpid(), "device": args.device, "load_s": round(runner.load_s, 3), "sonic": runner.sonic_version()})
    loaded.set()

    while True:
        try:
            req = tasks.get(timeout=0.2)
        except queue.Empty:
            if state["stopping"] and not state["busy"]:
                _exit(0)
            continue
        rid = req["id"]

        def progress(fraction: float, rid: str = rid) -> None:
            proto.send({"type": "progress", "id": rid, "fraction": round(fraction, 4)})

        try:
            result = runner.render(req, progress)
            reply = {"type": "done", "id": rid, **result}
        except RenderFailure as f:
            reply = {"type": "failed", "id": rid, "code": f.code, "message": f.message[-2000:], "restart": f.restart}
        except Exception as err:  # noqa: BLE001 - a runner bug fails the task, not the worker
            reply = {"type": "failed", "id": rid, "code": "INFERENCE_FAILED", "message": f"{type(err).__name__}: {err}", "restart": False}
        with proto.lock:
            state["busy"] = False
            proto.send_locked(reply)
        if reply.get("restart"):
            print(f"sonic runner: {reply['code']} asks for a fresh process (GPU state or memory); exiting {EXIT_RESTART}", file=sys.stderr)
            _exit(EXIT_RESTART)
        if state["stopping"]:
            _exit(0)


if __name__ == "__main__":
    main()
