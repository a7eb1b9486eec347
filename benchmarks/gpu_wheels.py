"""Download, here, the wheels that benchmarks/gpu_trials.py needs on a GPU machine that has no package registry.

The device image holds python3 3.12 with torch (CUDA), numpy, pandas, pyarrow, scipy, matplotlib, rich, click,
accelerate and tokenizers, but not trl, optuna, datasets, pydantic or bitsandbytes, and older transformers and
huggingface_hub than hpo-action's. This fetches those, pinned to the versions the benchmark was checked with here,
as cp312 manylinux x86_64 wheels into .whl/ (ignored by git); bitsandbytes' wheel carries a library per CUDA
version (43 MB), so only its CPU and CUDA 13 libraries are kept (the image's torch is built for CUDA 13.0).

    python benchmarks/gpu_wheels.py [--dest .whl] [--python-version 3.12] [--cuda 130,132]

On the device: `python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade
--target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site` (see gpu_trials.py's docstring).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CARRY_LIMIT = 64 * 2**20  # what travels to the device machine: the working tree and the carried paths together

WHEELS = (
    # the Hugging Face stack, as hpo-action is tested with (the image's transformers and hub are older)
    "transformers==5.24.0",
    "huggingface_hub==2.4.0",
    "httpx2==2.16.2",
    "httpcore2==2.16.2",
    "truststore==0.10.5",
    "tokenizers==0.23.3",
    "regex==2026.11.19",  # transformers checks regex>=2025.10.22 at import
    "fsspec==2026.9.0",
    "peft==0.21.2",
    "trl==1.16.0",
    "datasets==5.2.0",
    "dill==0.4.1",
    "multiprocess==0.70.19",
    # the study
    "optuna==5.0.0",
    "alembic==1.20.1",
    "mako==1.4.3",
    "sqlalchemy==2.1.9",
    "colorlog==6.12.0",
    "cmaes==0.13.1",
    # the config
    "pydantic==2.14.4",
    "pydantic-core==2.50.5",
    "annotated-types==0.8.0",
    "typing-inspection==0.4.5",
    "typing-extensions==4.16.0",
    # QLoRA
    "bitsandbytes==0.50.2",
)
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64")
PLATFORMS += ("manylinux2014_x86_64", "manylinux1_x86_64")


def download(dest: Path, python_version: str) -> None:
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"]
    command += ["--python-version", python_version, "--implementation", "cp", "-d", str(dest)]
    for platform in PLATFORMS:
        command += ["--platform", platform]
    subprocess.run([*command, *WHEELS], check=True)


def slim_bitsandbytes(dest: Path, cuda: tuple[str, ...]) -> None:
    """Rewrite bitsandbytes' wheel without the native libraries of other CUDA versions, ROCm and XPU (and their
    RECORD lines): the CPU library and libbitsandbytes_cuda{N}.so for N in `cuda` stay."""
    keep = {"libbitsandbytes_cpu.so", *(f"libbitsandbytes_cuda{n}.so" for n in cuda)}

    def dropped(path: str) -> bool:
        name = path.rsplit("/", 1)[-1]
        return name.startswith("libbitsandbytes_") and name not in keep

    for wheel in dest.glob("bitsandbytes-*.whl"):
        slim = wheel.with_suffix(".slim")
        with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(slim, "w", zipfile.ZIP_DEFLATED) as target:
            for item in source.infolist():
                if dropped(item.filename):
                    continue
                data = source.read(item)
                if item.filename.endswith(".dist-info/RECORD"):
                    lines = data.decode().splitlines(keepends=True)
                    data = "".join(line for line in lines if not dropped(line.split(",")[0])).encode()
                target.writestr(item, data)
        slim.replace(wheel)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", default=str(ROOT / ".whl"))
    parser.add_argument("--python-version", default="3.12", help="The device image's Python (3.12 there).")
    parser.add_argument("--cuda", default="130,132", help="bitsandbytes CUDA libraries to keep (torch.version.cuda).")
    args = parser.parse_args()
    dest = Path(args.dest)
    dest.mkdir(parents=True, exist_ok=True)
    download(dest, args.python_version)
    slim_bitsandbytes(dest, tuple(n.strip() for n in args.cuda.split(",")))
    wheels = sorted(dest.glob("*.whl"))
    total = sum(w.stat().st_size for w in wheels)
    print(f"{len(wheels)} wheels, {total / 2**20:.1f} MiB in {dest}")
    if total > CARRY_LIMIT - 8 * 2**20:
        print("warning: with the working tree this may pass the 64 MiB the device machine accepts", file=sys.stderr)


if __name__ == "__main__":
    main()
