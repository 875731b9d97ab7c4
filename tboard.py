"""Start TensorBoard on the newest run folder (or on one you name).

    python tboard.py                      # newest run under logs/
    python tboard.py --run logs/<run>     # a given run
    python tboard.py --port 6010
"""

import argparse
import shutil
import socket
import subprocess
import sys
from pathlib import Path


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
    port = free_port(args.port)
    command = build_command(run_dir, port)
    print(f"TensorBoard on {run_dir} at http://localhost:{port}")
    if args.print_only:
        print(" ".join(command))
        return 0
    try:
        return subprocess.call(command)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
