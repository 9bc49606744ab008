"""Give each replica of a scaled compose service a GPU of its own, then run the server.

`docker compose up --scale longenc=N` hands every replica the same device request, and Docker
maps `count: 1` to GPU 0 for all of them. So docker-compose.yml gives each replica every GPU and
starts it through this script, which claims one: it takes an exclusive, non-blocking `flock` on
`<claims-dir>/gpu<i>.lock` for the first free index i, keeps that descriptor open across `exec`,
and sets `CUDA_VISIBLE_DEVICES=i`. The claims directory is a volume shared by the replicas of one
host; the kernel drops a lock when its process exits, so a restarted replica takes a free GPU again.

    python deploy/gpu_claim.py [--gpus N] [--claims-dir DIR] -- python -m app

Without GPUs, or with CUDA_VISIBLE_DEVICES already set by the operator, the command runs unchanged.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import sys

DEFAULT_CLAIMS_DIR = "/var/lib/longenc/gpu-claims"


def visible_gpu_count() -> int:
    """Number of CUDA devices this container can see (imported late: torch is slow to import)."""
    import torch

    return torch.cuda.device_count()


def claim_gpu(claims_dir: str, gpu_count: int) -> tuple[int, int] | None:
    """Lock the first unclaimed GPU index below gpu_count.

    Returns (index, file descriptor holding the lock), or None when every GPU is claimed.
    """
    os.makedirs(claims_dir, exist_ok=True)
    for index in range(gpu_count):
        lock_fd = os.open(
            os.path.join(claims_dir, f"gpu{index}.lock"), os.O_RDWR | os.O_CREAT, 0o666
        )
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock_fd)
            continue
        return index, lock_fd
    return None


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, default=None, help="GPU count (default: ask torch)")
    parser.add_argument("--claims-dir", default=DEFAULT_CLAIMS_DIR)
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the server command")
    args = parser.parse_args(argv)
    if args.command[:1] == ["--"]:
        args.command = args.command[1:]
    if not args.command:
        parser.error("no command given after --")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if "CUDA_VISIBLE_DEVICES" not in os.environ:
        gpu_count = visible_gpu_count() if args.gpus is None else args.gpus
        if gpu_count > 0:
            claim = claim_gpu(args.claims_dir, gpu_count)
            if claim is None:
                print(
                    f"gpu_claim: all {gpu_count} GPUs are claimed by other replicas; "
                    f"run at most {gpu_count} replicas per host (--scale longenc={gpu_count})",
                    file=sys.stderr,
                )
                return 1
            index, lock_fd = claim
            os.set_inheritable(lock_fd, True)  # the lock lives as long as the server process
            # PCI order, so that index i names the same GPU in every replica.
            os.environ["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
            os.environ["CUDA_VISIBLE_DEVICES"] = str(index)
            print(f"gpu_claim: this replica uses GPU {index} of {gpu_count}", file=sys.stderr)
    sys.stdout.flush()
    os.execvp(args.command[0], args.command)
    return 0  # not reached: exec replaces this process


if __name__ == "__main__":
    raise SystemExit(main())
