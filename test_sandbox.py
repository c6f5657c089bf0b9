"""Attack set for the code grader (sandbox.run_code / _run_sandboxed): programs that try to fool it (exit before
the tests, a __main__ block, tuples for lists) or to attack it (kill the grader, fork loops, setsid daemons,
network, writes outside their folder). Each case checks the verdict, that it came within the timeout plus a
small margin, and that no process of the program is left afterwards.

Where namespaces work (Linux, root, util-linux `unshare`: this machine and CI) every case runs. Without them,
the cases that only namespaces defend against are skipped with the reason, and the fallback's own guarantees
(verdicts, the guard, the clean-up of processes) are still asserted. The attacks use ctypes on purpose: it
bypasses the in-process guard, so they test the outer layers. Bounded: ~40 sandbox runs, ~15 s on 2 busy cores.
"""
import os
import secrets
import socket
import time

import pytest

import evaluate
import sandbox
from sandbox import run_code

HERE = os.path.dirname(os.path.abspath(__file__))
MARGIN = 2.0  # seconds a verdict may take beyond the program's timeout (process start + clean-up, loaded CI box)
ISOLATED = sandbox._sandbox_mode().namespaces
needs_namespaces = pytest.mark.skipif(not ISOLATED, reason="the fallback sandbox does not isolate this "
                                                           f"({sandbox._sandbox_mode().why})")
ADD = "def add(a, b):\n    return a + b\n"
ADD_TESTS = "assert add(2, 3) == 5\nassert add(-1, 1) == 0\n"


def tagged(body):
    """A program whose processes (and every child they fork) carry a unique name, so that the test can look
    for leftovers without confusing them with anyone else's processes; returns (source, tag)."""
    tag = "emx" + secrets.token_hex(4)
    head = f"import ctypes, os, signal, sys, time\nlibc = ctypes.CDLL(None, use_errno=True)\n" \
           f"libc.prctl(15, {tag.encode()!r}, 0, 0, 0)  # PR_SET_NAME\n"
    return head + body, tag


def leftovers(tag):
    """Pids of live (not zombie) processes named `tag`."""
    pids = []
    for d in os.listdir("/proc"):
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
        except (OSError, ValueError):
            continue
        name, state = stat[stat.index("(") + 1:stat.rindex(")")], stat.rsplit(")", 1)[1].split()[0]
        if name == tag and state not in "ZX":
            pids.append(int(d))
    return pids


def graded(body, tests=ADD_TESTS, timeout=5.0, stdin=None):
    """Run a tagged program through the sandbox: (exit code, stdout, seconds); asserts the time and leftovers."""
    source, tag = tagged(body)
    t = time.monotonic()
    if stdin is None:
        rc, out = sandbox._run_sandboxed(source, timeout=timeout, tests=tests)
    else:
        rc, out = sandbox._run_sandboxed(source, stdin_text=stdin, timeout=timeout)
    seconds = time.monotonic() - t
    assert seconds < timeout + MARGIN
    assert leftovers(tag) == [], "a process of the program outlived its verdict"
    return rc, out, seconds


# ----------------------------------------------------------------------------------------------------------------
# fooling the verdict


@pytest.mark.parametrize("exit_call", ["sys.exit(0)", "os._exit(0)", "raise SystemExit", "exit()"])
def test_exit_before_the_tests_fails(exit_call):
    assert run_code(ADD, ADD_TESTS) is True
    assert run_code(f"import os, sys\n{ADD}{exit_call}\n", ADD_TESTS) is False
    # an exit hook cannot turn a failed test into a pass either
    hook = f"import atexit, os\n{ADD}atexit.register(lambda: os._exit(0))\n"
    assert run_code(hook, ADD_TESTS + "assert add(1, 1) == 3\n") is False


def test_main_block_does_not_run_for_call_based_tests():
    # LiveCodeBench imports call-based solutions: a __main__ block reading stdin must not crash them
    solution = ADD + "if __name__ == '__main__':\n    a, b = map(int, input().split())\n    print(add(a, b))\n"
    assert run_code(solution, ADD_TESTS) is True
    # ... and the same program still works as a stdin/stdout program, where it runs as __main__
    assert run_code(solution, [{"input": "2 3\n", "output": "5\n"}]) is True
    assert run_code(solution, [{"input": "2 3\n", "output": "6\n"}]) is False


def test_tuple_result_equals_list_gold_as_in_livecodebench():
    row = {"question_content": "q", "metadata": '{"func_name": "pair"}', "public_test_cases":
           '[{"input": "3", "output": "[3, 4]", "testtype": "functional"}]'}
    tests = evaluate._lcb_tests(row)
    tuple_answer = "class Solution:\n    def pair(self, x: int) -> Tuple[int, int]:\n        return (x, x + 1)\n"
    assert run_code(tuple_answer, tests) is True  # LeetCode starter names (Tuple, List) work: LCB's import header
    assert run_code(tuple_answer.replace("x + 1", "x + 2"), tests) is False
    # hand-written asserts keep Python's ==, as human-eval / MBPP grade them
    assert run_code("def pair(x):\n    return (x, x + 1)\n", "assert pair(3) == [3, 4]") is False


def test_stdout_lines_compare_as_decimals_like_livecodebench():
    assert run_code("print('1.50 2')", [{"input": "", "output": "1.5 2.0\n"}]) is True
    assert run_code("print(50000000000000001)", [{"input": "", "output": "50000000000000000"}]) is False
    assert run_code("print('1.5 x')", [{"input": "", "output": "1.50 x"}]) is False


def test_site_packages_still_import():
    pytest.importorskip("numpy")
    assert run_code("import numpy as np\ndef f():\n    return int(np.arange(4).sum())\n", "assert f() == 6") is True


# ----------------------------------------------------------------------------------------------------------------
# attacking the grader


def test_guard_stops_plain_calls():
    # second layer, in every mode: the program's own os.kill / subprocess raise, so the solution fails
    for attack in ("os.kill(os.getppid(), signal.SIGKILL)", "os.killpg(os.getpgid(os.getppid()), 9)",
                   "import subprocess\nsubprocess.run(['true'])", "os.system('true')",
                   "import shutil\nos.mkdir('d')\nshutil.rmtree('d')",
                   "import multiprocessing\nmultiprocessing.Process().start()"):
        rc, _, _ = graded(f"{attack}\n{ADD}")
        assert rc != 0


def test_kill_the_parent():
    # the program's parent is the sandbox's PID 1: a SIGKILL to it ends the run as a fail, never the grader
    rc, _, _ = graded(f"libc.kill(os.getppid(), signal.SIGKILL)\n{ADD}")
    if ISOLATED:
        assert rc == 0  # another uid's process: EPERM, and the solution is right
    else:
        assert rc != 0  # its parent died under it


def test_kill_its_own_group_and_itself():
    rc, _, _ = graded(f"libc.killpg(os.getpgid(os.getppid()), signal.SIGKILL)\n{ADD}")
    assert rc != 0  # it is in that group itself
    rc, _, _ = graded(f"libc.kill(os.getpid(), signal.SIGKILL)\n{ADD}")
    assert rc != 0


@needs_namespaces
def test_kill_the_grader_and_its_group():
    # without a PID namespace these would kill pytest: the grader's pid and group are not visible inside
    me, group = os.getpid(), os.getpgid(0)
    rc, out, _ = graded(f"print(libc.kill({me}, 9), libc.killpg({group}, 9))\n", tests=None, stdin="")
    assert rc == 0 and out.split()[:2] == ["-1", "-1"]  # ESRCH: no such process in its namespace


def test_bounded_fork_loop_is_cut_and_cleaned_up():
    # 200 forks that sleep: stopped at CODE_MAX_PROCS by the sandbox uid's RLIMIT_NPROC (root is exempt)
    body = ("n = 0\nfor _ in range(200):\n    pid = libc.fork()\n    if pid == 0:\n        time.sleep(60)\n"
            "        os._exit(0)\n    if pid < 0:\n        break\n    n += 1\nprint(n, flush=True)\n")
    rc, out, _ = graded(body, tests=None, stdin="")
    forked = int(out.split()[0])
    assert rc == 0
    if ISOLATED:
        assert forked < sandbox.CODE_MAX_PROCS
    # leftovers() in graded(): all of them are gone


def test_setsid_child_that_sleeps_is_killed():
    body = ("pid = libc.fork()\nif pid == 0:\n    os.setsid()\n    time.sleep(60)\n    os._exit(0)\n"
            f"print(pid, flush=True)\n{ADD}")
    rc, _, seconds = graded(body)
    assert rc == 0 and seconds < 5.0  # the solution is right; its daemon did not hold up the verdict
    rc, out, _ = graded(body.replace(ADD, "time.sleep(60)\n"), tests=None, stdin="", timeout=1.0)
    assert rc is None  # timed out, and the daemon went with it (graded() checks)


def test_network_is_unreachable():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(0.5)
        port = server.getsockname()[1]
        body = ("import socket\ntry:\n    socket.create_connection(('127.0.0.1', %d), timeout=2).sendall(b'x')\n"
                "    print('connected')\nexcept OSError:\n    print('unreachable')\n") % port
        rc, out, _ = graded(body, tests=None, stdin="")
        assert rc == 0
        if not ISOLATED:
            pytest.skip("the fallback sandbox does not isolate the network")
        assert out.split() == ["unreachable"]
        with pytest.raises(socket.timeout):
            server.accept()


@needs_namespaces
def test_writes_outside_the_folder_do_not_persist(tmp_path):
    # destructive only where namespaces make it harmless: in the fallback these would really write
    os.chmod(tmp_path, 0o777)
    targets = [str(tmp_path / "evil.txt"), os.path.join(HERE, "evil.txt"), "/tmp/evil.txt", "/dev/shm/evil.txt"]
    project = {name: os.stat(os.path.join(HERE, name)).st_mtime_ns for name in ("sandbox.py", "test_sandbox.py")}
    body = "".join(f"try:\n    open({t!r}, 'w').write('x')\n    print('wrote')\nexcept OSError:\n    print('no')\n"
                   for t in targets)
    body += ("for name in ('sandbox.py', 'test_sandbox.py'):\n    try:\n"
             f"        os.open(os.path.join({HERE!r}, name), os.O_WRONLY | os.O_APPEND)\n        print('wrote')\n"
             "    except OSError:\n        print('no')\n"
             "open('inside.txt', 'w').write('fine')\nprint(open('inside.txt').read(), os.getcwd())\n")
    rc, out, _ = graded(body, tests=None, stdin="")
    *verdicts, inside, cwd = out.split()
    assert rc == 0 and verdicts == ["no"] * 6 and inside == "fine"
    for t in targets:
        assert not os.path.exists(t)
    assert not os.path.exists(cwd)  # the program's own folder is gone too
    assert {n: os.stat(os.path.join(HERE, n)).st_mtime_ns for n in project} == project


@needs_namespaces
def test_privileges_are_dropped_and_limits_stay():
    body = ("import resource\nprint(os.getuid() != 0, os.getpid())\n"
            "try:\n    resource.setrlimit(resource.RLIMIT_NPROC, (10**6, 10**6))\n    print('raised')\n"
            "except (ValueError, OSError):\n    print('kept')\n"
            "print(libc.mount(b'none', b'/tmp', b'tmpfs', 0, None))\n")
    rc, out, _ = graded(body, tests=None, stdin="")
    assert rc == 0 and out.split() == ["True", "2", "kept", "-1"]


def test_without_namespaces_one_warning_and_the_fallback_still_grades(monkeypatch, capsys):
    real_which = sandbox.shutil.which
    monkeypatch.setattr(sandbox.shutil, "which", lambda name, *a, **k: None if name == "unshare"
                        else real_which(name, *a, **k))
    monkeypatch.setattr(sandbox, "_MODE", None)  # restored after the test
    assert sandbox._sandbox_mode().namespaces is False and sandbox._sandbox_mode().namespaces is False
    err = capsys.readouterr().err
    assert err.count("warning: sandbox.run_code: no namespace sandbox (") == 1
    assert "use the network" in err and "write files" in err and "process limit" in err
    assert run_code(ADD, ADD_TESTS) is True
    assert run_code(f"import sys\n{ADD}sys.exit(0)\n", ADD_TESTS) is False
    assert capsys.readouterr().err == ""  # once per process


def test_run_program_runs_a_whole_script_by_its_exit_status():
    # sandbox.run_program: the script is __main__, no import header unless asked, files sit beside it
    rc, out = sandbox.run_program("import sys\nprint(open('data.bin', 'rb').read())\nsys.exit(3)",
                                  files={"data.bin": b"\x00xyz"})
    assert (rc, out) == (3, "b'\\x00xyz'\n")
    assert sandbox.run_program("if __name__ == '__main__':\n    print('main')")[1] == "main\n"
    assert sandbox.run_program("x: List[int] = []")[0] == 1  # no LiveCodeBench header: typing names undefined
    assert sandbox.run_program("x: List[int] = []", header=sandbox.LCB_HEADER)[0] == 0
    start = time.monotonic()
    assert sandbox.run_program("while True:\n    pass", timeout=1.0) == (None, "")
    assert time.monotonic() - start < 1.0 + MARGIN
    with pytest.raises(ValueError):
        sandbox.run_program("pass", files={"../escape": b""})


def test_run_program_must_finish_fails_a_script_that_exits_early():
    assert sandbox.run_program("import sys\nsys.exit(0)\nassert False") == (0, "")  # plain: the exit status only
    assert sandbox.run_program("import sys\nprint('x')\nsys.exit(0)\nassert False", must_finish=True) == (1, "x\n")
    assert sandbox.run_program("import os\nos._exit(0)", must_finish=True)[0] == 1
    assert sandbox.run_program("print(input())", must_finish=True, stdin_text="hello\n") == (0, "hello\n")
    assert sandbox.run_program("assert 1 == 2", must_finish=True)[0] == 1
