"""Cog predictor for Sonic: the same SonicRunner as the stdio worker (runner.py), loaded once in
setup(), one prediction at a time.

The inputs are those the `cog` infer backend sends (src/stages/backends/cog.ts): image, audio,
min_resolution, inference_steps, dynamic_scale, expand_ratio, crop (the task's crop_to_face, off
when preprocess has already cropped the picture to the face) and seed (left out for Sonic's
default seed). `crop` defaults to on for other callers.
A failure raises with a message starting with its code and a phrase that
src/stages/backends/failures.ts classifies (no face / out of memory / CUDA error).

The process never ends itself: Cog runs predict() in a child of its HTTP server and does not
restart that child when it dies (see ops/sonic/README.md, "The Cog model"). After a failure that
asks for a restart, the predictor frees what it can (the failed render's tensors, torch's cached
blocks) and carries on: an out-of-memory error leaves the CUDA context usable. After a CUDA error
it cannot be trusted: every later prediction fails at once with CUDA_ERROR, and `healthcheck()`
returns False, so Cog's /health-check answers status UNHEALTHY, which the container's liveness
probe turns into a restart.

Settings (environment): SONIC_DIR, the Sonic checkout at ops/sonic/SONIC_COMMIT with the weights
mounted at SONIC_DIR/checkpoints (default /opt/Sonic); SONIC_DEVICE (default 0);
SONIC_INTERPOLATE (default 1; 0 skips RIFE and gives 12.5 fps).
"""
import gc
import os
import shutil
import sys
import tempfile
import threading
from typing import Optional

from cog import BasePredictor, Input, Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from runner import RenderFailure, SonicRunner  # noqa: E402

# a phrase per code that failures.ts's patterns recognise, whatever the underlying message says
PHRASES = {
    "NO_FACE_DETECTED": "no face found in the image",
    "GPU_OOM": "CUDA out of memory",
    "CUDA_ERROR": "CUDA error",
    "INPUT_INVALID": "invalid input",
    "INFERENCE_FAILED": "inference failed",
}


class Predictor(BasePredictor):
    def setup(self) -> None:
        self.runner = SonicRunner(
            os.environ.get("SONIC_DIR", "/opt/Sonic"),
            int(os.environ.get("SONIC_DEVICE", "0")),
            os.environ.get("SONIC_INTERPOLATE", "1") != "0",
        )
        self.runner.load()
        self.lock = threading.Lock()
        self.last_work: Optional[str] = None
        # set after a CUDA error: the GPU context is no longer trusted until the container restarts
        self.gpu_fault: Optional[str] = None

    def healthcheck(self) -> bool:
        """Cog's user health check: False once a CUDA error has made the GPU state untrustworthy."""
        return self.gpu_fault is None

    def predict(
        self,
        image: Path = Input(description="Portrait image (PNG)"),
        audio: Path = Input(description="Speech, 16 kHz mono WAV"),
        min_resolution: int = Input(default=512, ge=256, le=1024, description="Short side of the video, px (multiple of 64)"),
        inference_steps: int = Input(default=25, ge=1, le=100, description="Diffusion steps"),
        dynamic_scale: float = Input(default=1.0, ge=0.5, le=2.0, description="Motion intensity (Sonic's motion_bucket_scale)"),
        expand_ratio: float = Input(default=0.5, ge=0.1, le=1.0, description="Face crop margin, share of the face box per side"),
        seed: Optional[int] = Input(default=None, ge=0, description="Seed; empty for Sonic's configured default"),
        crop: bool = Input(default=True, description="Crop the image to the face before rendering"),
    ) -> Path:
        # the previous prediction's output has been sent by now (Cog runs one at a time)
        if self.last_work:
            shutil.rmtree(self.last_work, ignore_errors=True)
        work = self.last_work = tempfile.mkdtemp(prefix="sonic-")
        request = {
            "type": "render",
            "id": os.path.basename(work),
            "image": os.path.abspath(str(image)),
            "audio": os.path.abspath(str(audio)),
            "output": os.path.join(work, "out.mp4"),
            "work_dir": work,
            "params": {
                "min_resolution": int(min_resolution),
                "inference_steps": int(inference_steps),
                "dynamic_scale": float(dynamic_scale),
                "expand_ratio": float(expand_ratio),
                "crop": bool(crop),
                "seed": None if seed is None else int(seed),
            },
        }
        with self.lock:
            if self.gpu_fault is not None:
                raise RuntimeError(f"CUDA_ERROR: {PHRASES['CUDA_ERROR']}: an earlier prediction left the GPU untrustworthy ({self.gpu_fault}); restart the container")
            failure: Optional[RenderFailure] = None
            try:
                result = self.runner.render(request, lambda f: print(f"sonic: {round(f * 100)}% of the diffusion steps", flush=True))
            except RenderFailure as f:
                failure = f
            if failure is not None:
                if failure.code == "CUDA_ERROR":
                    self.gpu_fault = failure.message[:300]
                if failure.restart:
                    # outside the except block, so the traceback no longer holds the render's tensors
                    _free_gpu_memory()
                raise RuntimeError(f"{failure.code}: {PHRASES.get(failure.code, 'failed')}: {failure.message}")
        print(f"sonic: done, seed {result['seed']}, {result['elapsed_s']} s", flush=True)
        return Path(result["output"])


def _free_gpu_memory() -> None:
    """Collects the failed render's objects and hands torch's cached GPU blocks back to the driver."""
    gc.collect()
    torch = sys.modules.get("torch")
    try:
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception as err:  # noqa: BLE001 - after a CUDA error this may fail too; the health check says so
        print(f"sonic: freeing GPU memory failed: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
