"""Start TensorBoard on the newest run folder (or on one you name).

    python tboard.py                      # newest run under logs/
    python tboard.py --run logs/<run>     # a given run
    python tboard.py --port 6010

Several at once on one machine each get their own port: choosing a free port and
starting TensorBoard on it happen under a lock file in the temporary folder, held until
that TensorBoard listens, so two starts never pick the same port.
"""

import argparse
import fcntl
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PORT_LOCK = Path(tempfile.gettempdir()) / "causalgan-tboard-ports.lock"
STARTUP_SECONDS = 60.0  # longest wait for a TensorBoard to listen before the lock is let go


def newest_run(log_dir):
    """The most recently modified run folder under log_dir, or None."""
    root = Path(log_dir)
    runs = [path for path in root.iterdir() if path.is_dir()] if root.is_dir() else []
    return max(runs, key=lambda path: path.stat().st_mtime, default=None)


def free_port(start, host="localhost", tries=50):
    """The first port from start on that nobody listens on."""
    for port in range(start, start + tries):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {start}..{start + tries - 1}")


def listening(port, host="localhost") -> bool:
    """Whether something accepts connections on the port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def start(run_dir, first_port, lock_path=PORT_LOCK):
    """Start TensorBoard on the first free port from first_port on: (process, port).

    Holds ``lock_path`` from choosing the port until TensorBoard listens on it (or exits,
    or STARTUP_SECONDS pass), so concurrent starts take distinct ports.
    """
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            port = free_port(first_port)
            process = subprocess.Popen(build_command(run_dir, port))
            deadline = time.monotonic() + STARTUP_SECONDS
            while process.poll() is None and not listening(port) \
                    and time.monotonic() < deadline:
                time.sleep(0.2)
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
    return process, port


def build_command(run_dir, port):
    """The TensorBoard command line for a run folder."""
    executable = shutil.which("tensorboard")
    base = [executable] if executable else [sys.executable, "-m", "tensorboard.main"]
    return base + ["--logdir", str(run_dir), "--port", str(port)]


def main(argv=None):
    parser = argparse.ArgumentParser(description="TensorBoard on the newest run folder.")
    parser.add_argument("--log_dir", default="logs", help="Folder holding the run folders.")
    parser.add_argument("--run", default="", help="A run folder (default: the newest).")
    parser.add_argument("--port", type=int, default=6006,
                        help="First port to try; the next free one is used if it is taken.")
    parser.add_argument("--print_only", action="store_true",
                        help="Print the command instead of starting TensorBoard.")
    args = parser.parse_args(argv)
    run_dir = Path(args.run) if args.run else newest_run(args.log_dir)
    if run_dir is None or not run_dir.is_dir():
        where = args.run or args.log_dir
        print(f"tboard.py: error: no run folder found at {where}. Start a run first, e.g. "
              "python main.py --causal_model big_causal_graph --dataset toyfaces "
              "--is_pretrain True", file=sys.stderr)
        return 2
    if args.print_only:
        port = free_port(args.port)
        print(f"TensorBoard on {run_dir} at http://localhost:{port}")
        print(" ".join(build_command(run_dir, port)))
        return 0
    process = None
    try:
        process, port = start(run_dir, args.port)
        if process.poll() is not None:
            print(f"tboard.py: error: TensorBoard stopped at once (exit code "
                  f"{process.returncode}); see its messages above.", file=sys.stderr)
            return 2
        print(f"TensorBoard on {run_dir} at http://localhost:{port}", flush=True)
        return process.wait()
    except KeyboardInterrupt:
        if process is not None:
            process.terminate()
        return 0


if __name__ == "__main__":
    sys.exit(main())
