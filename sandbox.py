"""sandbox.py: run untrusted generated code, isolated, with a verdict and nothing left behind.

The code graders of evaluate.py (LiveCodeBench, and every benchmark that runs a model's program) call two
functions here:

    run_code(code, tests, timeout)       LiveCodeBench's protocol: call-based asserts or stdin/stdout cases -> bool
    run_program(source, ...)             one program as __main__ -> (exit code or None on timeout, stdout)

Protocol of run_code (LiveCodeBench's, lcb_runner/evaluation/testing_util.py): call-based tests import the
solution as a module (its `if __name__ == "__main__":` block does not run) and call it; stdin/stdout programs
run as a script on the test input and their output is compared line by line. Both get LiveCodeBench's header of
stdlib imports (LeetCode starter code says `List[int]` without importing typing).

Layers, outermost first (run_code's docstring says what each one does and does not isolate):
  1. namespaces (util-linux `unshare`, as root): the program is PID 2 of a fresh PID namespace whose PID 1
     is our bootstrap (_child below); when PID 1 exits the kernel kills everything left in the namespace,
     setsid() or not. A fresh network namespace has only a loopback that is down. In a private mount namespace
     every mount is read-only except the sandbox folder, a small tmpfs that vanishes with the namespace.
  2. an unprivileged uid of its own (not in /etc/passwd) with no_new_privs: file permissions apply,
     rlimits cannot be raised again, RLIMIT_NPROC bounds fork loops (the kernel never enforces it for root).
  3. rlimits: address space, CPU time, file size, processes.
  4. a guard in the program's process (human-eval's reliability_guard idea): os.kill, subprocess, ... raise.
     Python code can get around it (ctypes, posix), so it only catches accidents.
Without namespaces (not root, no `unshare`, not Linux) a one-time warning names what is not isolated.
"""
import contextlib
import decimal
import functools
import inspect
import itertools
import json
import math
import os
import secrets
import select
import shutil
import signal
import site
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

CODE_MEMORY_MB = 2048  # RLIMIT_AS: address space, a bit above what python + numpy need to start
CODE_FILE_MB = 16  # RLIMIT_FSIZE: largest file (stdout included: it is captured in a file)
CODE_MAX_PROCS = 64  # RLIMIT_NPROC of the sandbox uid: processes + threads (ours: a fork loop stops here)
CODE_SCRATCH_MB = 64  # size of the tmpfs that is the program's folder under namespaces (ours: 4 x a file)
_SANDBOX_UID_BASE = 1 << 30  # sandbox uids: 2^30 + a per-run offset, far above any real account
_SANDBOX_UIDS = itertools.count()  # thread-safe in CPython: concurrent runs get different uids
# programs start with `python -I -S` (no site.py: its .pth files can import whole packages at every start) and
# get the site-packages folders on sys.path directly: numpy & co. import, .pth path hooks do not apply
_SITE_PACKAGES = [p for p in getattr(site, "getsitepackages", list)() if os.path.isdir(p)]
# LiveCodeBench prepends these imports to every solution (its `import_string`), in this order: `from m import *`
# for each, then `import m` for all but builtins and typing, then a recursion limit of 50000.
_LCB_MODULES = ("string", "re", "datetime", "collections", "heapq", "bisect", "copy", "math", "random", "statistics",
                "itertools", "functools", "operator", "io", "sys", "json", "builtins", "typing")
LCB_HEADER = "".join(f"from {m} import *\n" for m in _LCB_MODULES) + "".join(
    f"import {m}\n" for m in _LCB_MODULES if m not in ("builtins", "typing")) + "sys.setrecursionlimit(50000)\n"


def _child():
    """The sandbox's own program: `python -I -S -c <this function's source> <config json>`, run in the
    program's folder. Under namespaces it is PID 1 (root) of the new namespaces: it sets up the mounts, forks the
    program (PID 2), and exits with the program's exit status, which makes the kernel kill whatever else is
    left in the namespace. It runs in a bare interpreter: it uses only what it imports itself, never a name
    of this module."""
    import json, os, re, resource, sys

    cfg = json.loads(sys.argv[1])
    sys.path += cfg["site_packages"]  # -S skipped site.py: the .pth hooks, ~20 ms per program
    here = os.getcwd()


    def mount_namespace(libc):
        """Every mount read-only, except `here`: a fresh tmpfs owned by the sandbox uid (PID 1, still root)."""
        import ctypes, errno

        MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32  # <sys/mount.h>
        MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18
        flag_of = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC}

        def mount(src, target, fstype, flags, data=None):
            args = [None if s is None else s.encode() for s in (src, target, fstype, data)]
            if libc.mount(args[0], args[1], args[2], flags, args[3]) != 0:
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err), target)

        # the one safety interlock that matters: never change the mounts of the namespace we were started from
        if os.getpid() != 1 or os.readlink("/proc/self/ns/mnt") == cfg["host_mnt_ns"]:
            raise SystemExit(125)
        mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing below propagates back to the host
        kept = {}  # the files the grader wrote into the folder (main.py and cfg["files"]): hidden by the tmpfs below
        for name in ["main.py"] + cfg["files"]:
            with open(name, "rb") as f:
                kept[name] = f.read()
        uid = cfg["uid"]
        mount("none", here, "tmpfs", MS_NOSUID | MS_NODEV,
              f"size={cfg['scratch_mb']}m,nr_inodes=4096,mode=0700,uid={uid},gid={uid}")
        os.chdir(here)  # the old cwd is the host folder under the new tmpfs
        # the interpreter may sit under a folder the sandbox uid cannot enter (pyenv in /root, mode 700): put a
        # tmpfs (mode 755) over that folder and bind back only the entries on the interpreter's paths
        for blocked, entries in cfg["expose"]:
            stage = os.path.join(here, ".stage")
            os.mkdir(stage)
            mount(blocked, stage, None, MS_BIND)
            mount("none", blocked, "tmpfs", MS_NOSUID | MS_NODEV, "size=64k,mode=0755")
            for name in entries:
                src, dst = os.path.join(stage, name), os.path.join(blocked, name)
                os.mkdir(dst) if os.path.isdir(src) else open(dst, "w").close()
                mount(src, dst, None, MS_BIND | MS_REC)
            if libc.umount2(stage.encode(), 2) != 0:  # MNT_DETACH
                raise OSError(ctypes.get_errno(), "umount", stage)
            os.rmdir(stage)
        for name, data in kept.items():
            with open(name, "wb") as f:
                f.write(data)
        # MS_REMOUNT | MS_BIND changes the flags of this mount only; without MS_BIND it would change the
        # filesystem itself, which the host shares
        with open("/proc/self/mountinfo") as f:
            mounts = [line.split() for line in f]
        for fields in mounts:
            target = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])  # a space is \040
            if target == here:
                continue
            keep = sum(flag for name, flag in flag_of.items() if name in fields[5].split(","))
            try:
                mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | keep)
            except OSError as e:
                if e.errno != errno.ENOENT:  # ENOENT: hidden under one of our tmpfs, unreachable anyway
                    raise


    def guard():
        """Second layer, in the program's own process: the calls that act on other processes or delete files raise.
        (human-eval's reliability_guard idea; code can still get around it with ctypes, so it only stops accidents)"""
        import _posixsubprocess, builtins

        def disabled(*args, **kwargs):
            raise PermissionError("disabled by the grader's sandbox")

        for name in ("kill", "killpg", "system", "popen", "fork", "forkpty", "remove", "removedirs", "rmdir",
                     "unlink", "rename", "renames", "replace", "truncate", "chmod", "fchmod", "chown", "fchown", "lchown",
                     "chroot", "setuid", "setgid", "setreuid", "setresuid", "execv", "execve", "spawnv", "posix_spawn",
                     "posix_spawnp"):
            if hasattr(os, name):
                setattr(os, name, disabled)
        # subprocess starts children through _posixsubprocess.fork_exec (bound when subprocess is imported) or
        # os.posix_spawn; shutil.rmtree / move / chown fail through the os functions above. Patching those instead
        # of importing subprocess and shutil here saves their import time in every program.
        _posixsubprocess.fork_exec = disabled
        if "subprocess" in sys.modules:
            sys.modules["subprocess"]._fork_exec = disabled
        builtins.exit = builtins.quit = disabled  # the site helpers; sys.exit still works (the marker catches it)


    def program():
        """PID 2 (or the only process without namespaces): drop privileges, then run the solution."""
        if cfg["uid"] is not None:
            os.setgroups([])
            os.setresgid(cfg["uid"], cfg["uid"], cfg["uid"])
            os.setresuid(cfg["uid"], cfg["uid"], cfg["uid"])
        header = {}
        exec(cfg["header"], header)
        if cfg["call"]:
            # stdin carries "<marker>\n<tests>": read it, then stdin is empty, and the unlinked file is gone for good
            marker, tests = sys.stdin.readline().strip(), sys.stdin.read()
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.close(null)
            guard()
            import importlib.util

            spec = importlib.util.spec_from_file_location("solution", os.path.join(here, "main.py"))
            module = importlib.util.module_from_spec(spec)  # named "solution": its __main__ block does not run
            module.__dict__.update(header)
            sys.modules["solution"] = module
            spec.loader.exec_module(module)
            exec(compile(tests, "tests.py", "exec"), module.__dict__)  # the tests see the solution's names
            # every test ran: the marker, then out before any atexit hook or thread of the solution can add to it
            for stream in (sys.stdout, sys.__stdout__):
                stream.flush()
            os.write(1, f"\n{marker}\n".encode())
            os._exit(0)
        marker = sys.stdin.readline().strip() if cfg["must_finish"] else None  # the rest of stdin is the program's
        guard()
        import runpy

        sys.argv = ["main.py"]
        runpy.run_path(os.path.join(here, "main.py"), init_globals=header, run_name="__main__")
        if marker is not None:  # the whole script ran: the marker, as after the last test of call mode
            for stream in (sys.stdout, sys.__stdout__):
                stream.flush()
            os.write(1, f"\n{marker}\n".encode())
            os._exit(0)


    libc = None
    if cfg["namespaces"]:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        mount_namespace(libc)
    # soft = hard limits, set while still root; the unprivileged uid cannot raise them again
    mem, cpu, fsize = cfg["memory"], cfg["cpu"], cfg["fsize"]
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if cfg["uid"] is not None:
        resource.setrlimit(resource.RLIMIT_NPROC, (cfg["nproc"], cfg["nproc"]))
        libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS: a setuid binary (su, mount) cannot give root back
    child = os.fork()
    if child == 0:
        program()
        sys.exit(0)
    # init: reap every orphan that gets reparented to us until the program itself exits, then exit with its status;
    # under namespaces the kernel now kills the rest of the namespace before our parent sees us exit
    while True:
        pid, status = os.waitpid(-1, 0)
        if pid == child:
            os._exit(os.waitstatus_to_exitcode(status) % 256)


@functools.cache
def _child_source():
    """The child's source as a `python -c` program: _child's definition, then a call of it."""
    return textwrap.dedent(inspect.getsource(_child)) + "\n\n_child()\n"


def _pids_with_token(token):
    """Pids whose environment holds our sandbox token: catches children that left the process group."""
    pids = []
    for d in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if d.isdigit():
            try:
                with open(f"/proc/{d}/environ", "rb") as f:
                    if token in f.read():
                        pids.append(int(d))
            except OSError:
                continue
    return pids


def _blocked_folders(paths):
    """[(folder, [entries])]: folders on `paths` that other users cannot enter (mode without o+x, e.g. /root),
    shallowest first, with the entries under each that lead to `paths`."""
    blocked = {}
    for path in paths:
        parts = os.path.abspath(path).split(os.sep)[1:]
        for depth in range(1, len(parts)):
            folder = os.sep + os.path.join(*parts[:depth])
            if not os.stat(folder).st_mode & 0o001:
                blocked.setdefault(folder, set()).add(parts[depth])
    return [(f, sorted(blocked[f])) for f in sorted(blocked, key=lambda f: f.count(os.sep))]


class _SandboxMode:
    """How programs are isolated here: decided once per process by a probe run (see _sandbox_mode)."""

    def __init__(self, namespaces, why=""):
        self.namespaces, self.why = namespaces, why
        self.unshare = shutil.which("unshare") if namespaces else None
        # the interpreter and its libraries must be reachable for the sandbox uid
        paths = {sys.executable, sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
        self.expose = _blocked_folders(paths | {os.path.realpath(p) for p in paths}) if namespaces else []
        self.host_mnt_ns = os.readlink("/proc/self/ns/mnt") if namespaces else ""


_MODE, _MODE_LOCK = None, threading.Lock()


def _probe_namespaces():
    """(a namespace _SandboxMode, "") when one works here, else (None, why not). The probe program must be PID 2
    of its own namespace and unable to create a file outside its folder."""
    try:
        candidate = _SandboxMode(True)
        if _blocked_folders([tempfile.gettempdir()]):
            return None, f"the temporary folder {tempfile.gettempdir()} is under a folder other users cannot enter"
        with tempfile.TemporaryDirectory(prefix="em_probe_") as outside:
            os.chmod(outside, 0o777)
            probe = (f"import os\nprint(os.getpid())\ntry:\n    open({outside!r} + '/x', 'w')\n"
                     f"except OSError:\n    print('read-only')")
            rc, out = _run_sandboxed(probe, timeout=30.0, mode=candidate)
            leaked = os.listdir(outside)
    except (OSError, subprocess.SubprocessError) as e:
        return None, f"the probe run under `unshare` failed ({type(e).__name__}: {e})"
    if rc != 0 or out.split() != ["2", "read-only"] or leaked:
        return None, f"the probe run under `unshare` failed (exit code {rc}, output {out[:100]!r})"
    return candidate, ""


def _sandbox_mode():
    """Namespaces when util-linux `unshare` works here (root on Linux); otherwise the fallback, with a one-time
    warning that names what it does not isolate. Cached for the process."""
    global _MODE
    with _MODE_LOCK:
        if _MODE is None:
            why = ("not Linux" if not sys.platform.startswith("linux") else
                   "not root (namespaces and the sandbox uid need it)" if os.geteuid() != 0 else
                   "util-linux `unshare` not found" if shutil.which("unshare") is None else "")
            if not why:
                _MODE, why = _probe_namespaces()
            if why:
                _MODE = _SandboxMode(False, why)
                print(f"warning: sandbox.run_code: no namespace sandbox ({why}). Programs run as this user: they "
                      f"can use the network, write files wherever this user can, signal this user's processes "
                      f"(a guard stops plain os.kill, not ctypes) and fork without a process limit; the timeout, "
                      f"the memory/CPU/file-size rlimits (which root can raise again) and the clean-up of their "
                      f"processes still apply.", file=sys.stderr)
        return _MODE


def _kill_namespace(proc):
    """SIGKILL the namespace's PID 1 (the child of `unshare`) and wait for `unshare`: the kernel kills and reaps
    every process in the namespace before PID 1's exit reaches `unshare`, so then nothing of the run is left.
    False when there was no PID 1 to kill (it exited already, or a kernel without the children file)."""
    killed = False
    with contextlib.suppress(OSError):
        with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as f:
            for pid in f.read().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
                    killed = True
    if killed:
        with contextlib.suppress(subprocess.TimeoutExpired):
            _wait(proc, 5.0)
    return killed


def _wait(proc, timeout):
    """proc.wait(timeout=timeout), woken by the exit itself through a pidfd (Linux >= 5.3): Popen's own wait
    polls with sleeps that grow to 50 ms, which would add ~15 ms to a typical 40 ms program."""
    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # not Linux, an old kernel, or already reaped
        return proc.wait(timeout=timeout)
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        if not poller.poll(max(0, int(timeout * 1000))):
            raise subprocess.TimeoutExpired(proc.args, timeout)
    finally:
        os.close(fd)
    return proc.wait()


def _run_sandboxed(source, stdin_text=None, timeout=10.0, memory_mb=CODE_MEMORY_MB, tests=None, mode=None,
                   header=LCB_HEADER, files=None, must_finish=False):
    """Run `source` in the sandbox; returns (exit code or None on timeout, stdout text).

    tests=None: `source` runs as __main__ with `stdin_text` on stdin (a stdin/stdout problem).
    tests=str: `source` is imported as the module "solution" and the assert-style `tests` run in its namespace;
    the exit code is 0 only if the program exited 0 AND printed a random per-run marker that the bootstrap
    writes after the last test (a program that exits early, even with status 0, fails).
    mode: a _SandboxMode to use instead of this process's (the probe run tries one out).
    header: Python run in the program's namespace before it (LiveCodeBench's imports by default; "" for none).
    files: {name: bytes} put beside main.py in the program's folder (e.g. test data); they count against the
    folder's tmpfs, which grows by their size.
    must_finish (tests=None only): exit code 0 also needs the marker, written once the script has run to its end,
    so a script that calls sys.exit(0) or os._exit(0) before its last line fails."""
    mode = mode or _sandbox_mode()
    files = files or {}
    if any(os.sep in name or name in ("", ".", "..", "main.py") for name in files):
        raise ValueError(f"sandbox files must be plain names other than main.py, got {sorted(files)}")
    extra_mb = sum(len(data) for data in files.values()) >> 20
    marker = secrets.token_hex(16)
    uid = _SANDBOX_UID_BASE + (os.getpid() % 4096 << 12 | next(_SANDBOX_UIDS) % 4096) if mode.namespaces else None
    cfg = dict(namespaces=mode.namespaces, host_mnt_ns=mode.host_mnt_ns, expose=mode.expose, uid=uid,
               scratch_mb=CODE_SCRATCH_MB + extra_mb + 1, memory=memory_mb << 20, cpu=int(math.ceil(timeout)) + 1,
               fsize=CODE_FILE_MB << 20, nproc=CODE_MAX_PROCS, call=tests is not None, header=header,
               site_packages=_SITE_PACKAGES, files=sorted(files), must_finish=must_finish and tests is None)
    command = [sys.executable, "-I", "-S", "-c", _child_source(), json.dumps(cfg)]
    if mode.namespaces:
        # --kill-child: if unshare dies, PID 1 gets SIGKILL (and with it the namespace)
        command = [mode.unshare, "--pid", "--fork", "--kill-child", "--net", "--mount", "--mount-proc",
                   "--propagation", "private", "--ipc", "--uts", "--"] + command
    token = f"EM_SANDBOX_{os.getpid()}_{time.monotonic_ns()}"
    # scrubbed environment: no API keys, no PYTHONPATH, no CUDA; HOME/TMPDIR inside the sandbox dir
    with tempfile.TemporaryDirectory(prefix="em_code_") as tmp, tempfile.TemporaryFile() as fin, \
            tempfile.TemporaryFile() as fout:
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": tmp, "TMPDIR": tmp, "LANG": "C.UTF-8",
               "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1", "EM_SANDBOX": token}
        with open(os.path.join(tmp, "main.py"), "w") as f:
            f.write(source)
        for name, data in files.items():
            with open(os.path.join(tmp, name), "wb") as f:
                f.write(data)
        # stdin and stdout are unlinked files outside the folder: the program reaches them only as fd 0 and 1
        # (stdout is bounded by RLIMIT_FSIZE, where a pipe could be flooded); under tests, stdin carries the
        # marker and the tests, which the bootstrap reads before the solution is loaded
        fin.write((f"{marker}\n{tests}" if tests is not None else
                   f"{marker}\n{stdin_text or ''}" if must_finish else stdin_text or "").encode())
        fin.seek(0)
        proc = subprocess.Popen(command, cwd=tmp, env=env, stdin=fin, stdout=fout, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        try:
            code = _wait(proc, timeout)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            if mode.namespaces and proc.returncode is None:  # once reaped, its pid may be someone else's
                _kill_namespace(proc)
            with contextlib.suppress(ProcessLookupError, PermissionError):  # the group may be gone already
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            # without a PID namespace: children that called setsid(), found by token, until none is left
            # (a killed process drops its environment as it dies; a fork loop may still be adding some)
            deadline = time.monotonic() + 2.0
            while not mode.namespaces and time.monotonic() < deadline:
                pids = _pids_with_token(token.encode())
                if not pids:
                    break
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGKILL)
                time.sleep(0.01)
        fout.seek(0)
        out = fout.read().decode(errors="replace")
    if tests is not None or must_finish:
        done = out.endswith(f"\n{marker}\n")
        out = out[:-len(marker) - 2] if done else out
        code = code if code != 0 or done else 1
    return code, out


def run_program(source, *, timeout=10.0, memory_mb=CODE_MEMORY_MB, header="", stdin_text=None, files=None,
                must_finish=False):
    """Run one program as __main__ in the sandbox: (exit code, or None when it ran past `timeout`, stdout text).

    The isolation of run_code (its docstring); no test protocol and, by default, no import header: graders that
    judge a whole program by its exit status (LeetCode's asserts, SciCode's test files) call this.
    must_finish=True: exit code 0 only if the script also ran to its end (an early sys.exit(0) gives 1).
    Any failure to start the sandbox is an exit code of None, never an exception."""
    try:
        return _run_sandboxed(source, stdin_text=stdin_text, timeout=timeout, memory_mb=memory_mb, header=header,
                              files=files, must_finish=must_finish)
    except (OSError, subprocess.SubprocessError):
        return None, ""


def _lines(text):
    return [line.strip() for line in text.strip().splitlines()]


def _same_output(out, expected):
    """LiveCodeBench's stdout check: the same number of lines, each equal after stripping, or else equal as
    whitespace-separated decimals (1.50 == 1.5, exact: 50000000000000000 != 50000000000000001)."""
    got, want = _lines(out), _lines(expected)
    if len(got) != len(want):
        return False
    for a, b in zip(got, want):
        if a != b:
            try:
                if [decimal.Decimal(x) for x in a.split()] != [decimal.Decimal(x) for x in b.split()]:
                    return False
            except decimal.InvalidOperation:
                return False
    return True


def run_code(code, tests, timeout=10.0):
    """True when `code` passes `tests`, LiveCodeBench's way:
      - assert-style Python (str): `code` is imported as a module named "solution" (its __main__ block does not
        run), the tests run in its namespace, and a pass needs exit code 0 AND a random marker printed after
        the last test, so sys.exit(0) / os._exit(0) before the tests is a fail;
      - a list of {"input", "output"} stdin/stdout cases: `code` runs as __main__ on each input; its output
        must have the same lines, compared stripped (or as decimals); the first failing case decides.
    Either way the program first gets LiveCodeBench's stdlib imports (LCB_HEADER). Each run has `timeout`
    seconds of wall time; the verdict comes a fraction of a second later (the namespace's teardown), and
    nothing the program started is left.

    What is isolated, with namespaces (Linux, root, util-linux `unshare`; checked once per process):
      - processes: a PID namespace; when the program exits or times out its PID 1 exits and the kernel kills
        everything else inside, including children that called setsid(); the program cannot see or signal
        the grader (or any process outside);
      - network: a network namespace with no interfaces up: not even the host's 127.0.0.1 is reachable;
      - files: every mount is read-only except the program's folder, a 64 MB tmpfs of its own that is gone
        afterwards; the program runs as an unprivileged uid of its own (file permissions apply, no setuid
        binaries, limits cannot be raised); the interpreter's folders are exposed read-only, and a folder
        like /root that other users cannot enter shows only the interpreter's entries;
      - resources: address space (memory_mb per process), CPU time, file size, CODE_MAX_PROCS processes+threads.
    NOT isolated: reading world-readable files (/etc, /sys, the host-wide parts of /proc such as /proc/meminfo,
    the interpreter and its site-packages); the total memory of a process tree (only per process: up to
    CODE_MAX_PROCS x memory_mb; a memory cgroup would bound it); CPU and memory bandwidth shared with the host;
    kernel bugs. A program that searches its own process's memory for the marker can fake a pass (as with any
    in-process harness, LiveCodeBench's included).
    Without namespaces (not root, no `unshare`, not Linux) a one-time warning says so: only the rlimits, the
    timeout, the clean-up of the process group and of children found by an environment token, and the
    in-process guard (os.kill, subprocess, shutil.rmtree... raise; ctypes gets around it) apply.
    Neither mode is a substitute for a VM when the code is truly hostile."""
    try:
        if isinstance(tests, str):
            rc, _ = _run_sandboxed(code, timeout=timeout, tests=tests)
            return rc == 0
        if not tests:
            return False  # nothing to check is not a pass
        for case in tests:
            rc, out = _run_sandboxed(code, stdin_text=case["input"], timeout=timeout)
            if rc != 0 or not _same_output(out, case["output"]):
                return False  # first failing case decides, like LiveCodeBench
        return True
    except Exception:
        return False

