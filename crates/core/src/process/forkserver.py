# The server side of fanout's fork-server protocol (see forkserver.rs), for Python programs.
#
# A tool appends its own preamble (imports done once, in the server) and ends with
# `serve(run, hello)`, where `run(args) -> int` does one job in a freshly forked child.
#
# Protocol: one JSON object per line.
#   requests on stdin:  {"id": N, "args": [...], "env": {...}, "stdout": PATH, "stderr": PATH}
#                       {"reap": N}      (the client is done with job N: reap its process)
#   replies on stdout:  {"hello": {...}} once, when ready
#                       {"id": N, "pid": PID}          the job's process exists
#                       {"id": N, "exit": CODE} or {"id": N, "signal": SIG}   it ended
#                       {"id": N, "error": TEXT}       it could not be started
# An ended job's process stays a zombie until its "reap" comes, so the client never signals a
# pid that was reused. End of file on stdin ends the server.

import ctypes
import json
import os
import selectors
import signal
import sys
import traceback

_PR_SET_CHILD_SUBREAPER = 36


def _descendants(root):
    """Pids of every live descendant of `root`, from /proc."""
    children = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        children.setdefault(int(fields[1]), []).append(int(name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            found.append(child)
            todo.append(child)
    return found


def _end_descendants():
    """Kill and reap what the job left behind. The job's process is a subreaper, so orphans of
    its descendants are re-parented to it and every leftover is found below it."""
    me = os.getpid()
    for _ in range(200):
        left = _descendants(me)
        if not left:
            break
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        try:
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        except ChildProcessError:
            pass


def _child(request, run):
    os.setsid()
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
        out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(out, fd)
        os.close(out)
    os.closerange(3, 65536)
    os.environ.update(request.get("env") or {})
    code = 1
    try:
        code = run(request.get("args") or [])
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        _end_descendants()
    return code


def serve(run, hello):
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    # The jobs' output goes to their own files; nothing else may write to the reply stream.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)

    def send(message):
        replies.write(json.dumps(message) + "\n")
        replies.flush()

    selector = selectors.DefaultSelector()
    selector.register(0, selectors.EVENT_READ, None)
    jobs = {}  # id -> (pid, pidfd)

    def start(request):
        job = request["id"]
        try:
            pid = os.fork()
        except OSError as e:
            send({"id": job, "error": f"could not fork: {e}"})
            return
        if pid == 0:
            code = 1
            try:
                code = _child(request, run)
            finally:
                os._exit(code if isinstance(code, int) and 0 <= code < 256 else 1)
        pidfd = os.pidfd_open(pid)
        jobs[job] = (pid, pidfd)
        selector.register(pidfd, selectors.EVENT_READ, job)
        send({"id": job, "pid": pid})

    send({"hello": hello})
    pending = b""
    while True:
        for key, _ in selector.select():
            if key.data is None:
                chunk = os.read(0, 1 << 16)
                if not chunk:
                    return
                pending += chunk
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    if not line.strip():
                        continue
                    request = json.loads(line)
                    if "reap" in request:
                        pid, pidfd = jobs.pop(request["reap"], (None, None))
                        if pid is not None:
                            os.waitpid(pid, 0)
                            os.close(pidfd)
                    else:
                        start(request)
            else:
                job = key.data
                pid, pidfd = jobs[job]
                selector.unregister(pidfd)
                # WNOWAIT: the process stays a zombie (its pid cannot be reused) until "reap".
                info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
                if info.si_code == os.CLD_EXITED:
                    send({"id": job, "exit": info.si_status})
                else:
                    send({"id": job, "signal": info.si_status})
