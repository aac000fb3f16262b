"""Running the helper scripts of `tests/scripts/` in subprocesses, in bounded time."""

import os
import subprocess
import sys
import time

SCRIPTS = os.path.join(os.path.dirname(__file__), "scripts")


def environment(**overrides):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env.update(overrides)
    return env


def start(script, *args, env=None, log=None):
    """Starts `tests/scripts/<script>` with this interpreter; output goes to the file `log`."""
    output = open(log, "w") if log else subprocess.DEVNULL  # noqa: SIM115 (closed below)
    try:
        return subprocess.Popen(
            [sys.executable, os.path.join(SCRIPTS, script), *map(str, args)],
            env=env or environment(), stdout=output, stderr=subprocess.STDOUT,
        )
    finally:
        if log:
            output.close()  # the child holds its own copy


def run(script, *args, env=None, timeout=240):
    """Runs a script to completion; fails the test with its output if it fails or hangs."""
    try:
        done = subprocess.run(
            [sys.executable, os.path.join(SCRIPTS, script), *map(str, args)],
            env=env or environment(), capture_output=True, text=True, timeout=timeout,
        )
    except subprocess.TimeoutExpired as error:
        raise AssertionError(f"{script} did not finish in {timeout} s: {tail(error.stderr)}") from None
    assert done.returncode == 0, f"{script} failed ({done.returncode}):\n{tail(done.stderr)}"
    return done


def wait_all(processes, timeout, logs=()):
    """Waits for every process; any still running at the deadline fails the test."""
    deadline = time.monotonic() + timeout
    for process in processes:
        try:
            process.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            raise AssertionError(f"a subprocess ran past {timeout} s; {read_logs(logs)}") from None
    failed = [p.returncode for p in processes if p.returncode != 0]
    assert not failed, f"subprocesses exited with {failed}; {read_logs(logs)}"


def wait_for_file(path, process, timeout, log=None):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if process.poll() is not None:
            raise AssertionError(f"exited with {process.returncode} before writing {path}; {read_logs([log])}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear in {timeout} s; {read_logs([log])}")
        time.sleep(0.05)


def kill_all(processes):
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


def tail(text, size=3000):
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return (text or "")[-size:]


def read_logs(logs):
    parts = []
    for log in logs:
        if log and os.path.exists(log):
            with open(log) as f:
                parts.append(f"--- {log}:\n{tail(f.read())}")
    return "\n".join(parts)
