"""README.md's "A five-minute tour", run as written: its commands are read from the README.

The test splits the tour into its numbered steps, takes the commands of every ``bash``/``sh``
code block and every ``python`` block, and runs them in order in one ``bash`` process, as a user
would in a terminal where ``.venv`` is activated: ``export`` lines stay in force, and workers
started in the background (``&``, and step 3's worker, which the tour runs in a terminal of its
own) are tracked by pid, waited for until they log ``[^Worker]: Ready``, and killed by pid at
the end. What the tour says in prose rather than code, the test does itself, after checking the
step still says it: step 1 (``stream-app kafka up``) is replaced by the session's broker, step 6
kills the worker with SIGKILL and starts it again, step 7 first stops the counter worker,
step 8 the workers still running.

What the tour promises (in its comments) is asserted in :data:`PROMISES`; reads are retried
until they hold (a worker takes a moment), everything else runs once. For isolation from other
runs on the same broker and machine, a few literal values are substituted, mechanically and
all listed in :func:`substitutions`: every app id gets a unique suffix (also in topic names in
the Python step), the web ports 6066 and 6067 become free ports, ``/tmp/`` becomes the test's
temp folder and ``127.0.0.1:9092`` the session broker.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from stream_app.testing import READY_MARKER, ConditionTimeout, ProbeFailed, wait_for
from stream_app.testing.dev_broker import find_free_port, project_root

pytestmark = pytest.mark.integration

ROOT = project_root()
README = ROOT / "README.md"


@dataclass(frozen=True)
class Step:
    """One numbered step of the tour: its whole text and its code blocks ``(language, code)``."""

    number: int
    text: str
    blocks: list[tuple[str, str]]


def tour_steps(readme: str) -> list[Step]:
    """The numbered steps of the README's tour section, in order (later prose and code included
    in the step they follow)."""
    start = readme.index("## A five-minute tour")
    end = readme.find("\n## ", start + 1)
    section = readme[start : end if end >= 0 else None]
    heads = list(re.finditer(r"^\*\*(\d+)\. ", section, re.M))
    steps = []
    for head, following in zip(heads, [*heads[1:], None], strict=True):
        text = section[head.start() : following.start() if following else None]
        blocks = [
            (m["lang"], m["code"])
            for m in re.finditer(r"^```(?P<lang>\w*)\n(?P<code>.*?)^```", text, re.M | re.S)
        ]
        steps.append(Step(int(head[1]), text, blocks))
    return steps


def shell_lines(code: str) -> list[str]:
    """The commands of a shell block: every line that is not blank or only a comment."""
    lines = [line.strip() for line in code.splitlines()]
    commands = [line for line in lines if line and not line.startswith("#")]
    assert not any(line.endswith("\\") for line in commands), "continued lines: join them"
    return commands


def app_ids(steps: list[Step]) -> list[str]:
    """Every app id the tour's shell blocks set, in order."""
    shell = "\n".join(code for step in steps for lang, code in step.blocks if lang != "python")
    return list(dict.fromkeys(re.findall(r"STREAM_APP_APP_ID=([\w.-]+)", shell)))


def substitutions(
    ids: list[str], run: str, ports: dict[str, int], tmp: Path, bootstrap: str
) -> dict[str, str]:
    """The literal replacements that isolate this run (applied to every command)."""
    subs = {}
    for app_id in ids:
        subs[f"STREAM_APP_APP_ID={app_id}"] = f"STREAM_APP_APP_ID={app_id}-{run}"
        subs[f'"{app_id}.'] = f'"{app_id}-{run}.'  # topic names in the Python step
    for port, free in ports.items():
        subs[port] = str(free)
    subs["/tmp/"] = f"{tmp}/"
    subs["127.0.0.1:9092"] = bootstrap
    return subs


def substitute(command: str, subs: dict[str, str]) -> str:
    """``command`` with every substitution applied, in one pass (a replacement is never
    replaced again; the longest match wins)."""
    pattern = "|".join(re.escape(old) for old in sorted(subs, key=len, reverse=True))
    return re.sub(pattern, lambda match: subs[match[0]], command)


@dataclass(frozen=True)
class Result:
    """A finished command: its exit status, its standard output and its standard error."""

    command: str
    rc: int
    output: str
    errors: str

    def succeeded_saying(self, text: str) -> bool:
        """Whether the command exited 0 and ``text`` is in its output or its errors."""
        return self.rc == 0 and (text in self.output or text in self.errors)

    def json(self) -> Any:
        """The output decoded as JSON (``None`` when it is not JSON)."""
        try:
            return json.loads(self.output)
        except ValueError:
            return None

    def json_lines(self) -> list[Any]:
        """The output's lines that are JSON objects, decoded."""
        found = []
        for line in self.output.splitlines():
            with contextlib.suppress(ValueError):
                found.append(json.loads(line))
        return found


def _proc_state(pid: int) -> str | None:
    """The state letter of process ``pid`` (``None`` when there is no such process)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(") ")[2][:1]


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie does not)."""
    return _proc_state(pid) not in (None, "Z")


@dataclass
class Worker:
    """A worker the tour started in the background."""

    command: str
    pid: int
    log: Path

    def log_text(self) -> str:
        """What the worker logged so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class TourShell:
    """One ``bash`` that runs the tour's commands in order, like the user's terminal.

    Each foreground command's output goes to a file of its own and its exit status to another,
    which the test waits for; a background worker's output goes to its log, and ``$!`` (its pid)
    to a file.
    """

    cwd: Path
    env: dict[str, str]
    logs: Path
    workers: list[Worker] = field(default_factory=list)
    _count: int = 0
    _bash: subprocess.Popen[str] | None = None

    def __post_init__(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        with (self.logs / "bash.err").open("w") as errors:
            self._bash = subprocess.Popen(
                ["bash", "--noprofile", "--norc"],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=errors,
                cwd=self.cwd,
                env=self.env,
                text=True,
                start_new_session=True,
            )

    def _file(self, suffix: str) -> Path:
        """A file of the current command (``suffix``: ``.out``, ``.err``, ``.end``, ``.log``)."""
        return self.logs / f"{self._count:03}{suffix}"

    def _send(self, script: str, end: Path) -> str:
        """Have bash run ``script``, which leaves ``end.part``; return the text of ``end``
        once bash has renamed it so (so it is never read half written)."""
        assert self._bash is not None and self._bash.stdin is not None
        part = shlex.quote(f"{end}.part")
        self._bash.stdin.write(f"{script}\nmv {part} {shlex.quote(str(end))}\n")
        self._bash.stdin.flush()

        def probe() -> bool:
            assert self._bash is not None
            if self._bash.poll() is not None:
                raise ProbeFailed(f"the tour's bash exited with {self._bash.returncode}")
            return end.exists()

        wait_for(probe, bool, timeout=120, interval=0.05, what=f"{script!r} to finish")
        return end.read_text()

    def run(self, command: str) -> Result:
        """Run ``command`` in the foreground and return its status and output."""
        self._count += 1
        out, err, end = self._file(".out"), self._file(".err"), self._file(".end")
        rc = self._send(
            f"{{\n{command}\n}} > {shlex.quote(str(out))} 2> {shlex.quote(str(err))} "
            f"< /dev/null\necho $? > {shlex.quote(f'{end}.part')}",
            end,
        )
        return Result(
            command, int(rc), out.read_text(errors="replace"), err.read_text(errors="replace")
        )

    def start(self, command: str) -> Worker:
        """Start the worker ``command`` in the background (its ``&`` and comment dropped, its
        output to a log); wait until it is ready."""
        bare = command.split(" # ", 1)[0].strip().removesuffix("&").strip()
        self._count += 1
        log, end = self._file(".log"), self._file(".end")
        pid = self._send(
            f"{bare} > {shlex.quote(str(log))} 2>&1 < /dev/null &\n"
            f"echo $! > {shlex.quote(f'{end}.part')}",
            end,
        )
        worker = Worker(command, int(pid), log)
        self.workers.append(worker)

        def probe() -> str:
            if not alive(worker.pid):
                raise ProbeFailed(f"{bare!r} exited:\n{worker.log_text()[-4000:]}")
            return worker.log_text()

        try:
            wait_for(probe, lambda text: READY_MARKER in text, timeout=120, what=f"{bare!r} ready")
        except ConditionTimeout as exc:
            raise ConditionTimeout(
                f"{exc}\n--- log tail ---\n{worker.log_text()[-4000:]}"
            ) from None
        return worker

    def stop(self, worker: Worker, sig: signal.Signals) -> None:
        """Send ``sig`` to ``worker`` (by pid) and wait until it is gone."""
        if alive(worker.pid):
            os.kill(worker.pid, sig)
        wait_for(lambda: alive(worker.pid), lambda up: not up, timeout=60, what="worker gone")

    def close(self) -> None:
        """Kill every worker still running (by pid), then end bash (by pid)."""
        for worker in self.workers:
            with contextlib.suppress(OSError):
                if b"faust" in Path(f"/proc/{worker.pid}/cmdline").read_bytes():
                    os.kill(worker.pid, signal.SIGKILL)
        if self._bash is not None:
            with contextlib.suppress(OSError):
                if self._bash.stdin:
                    self._bash.stdin.close()
            try:
                self._bash.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._bash.kill()
                self._bash.wait(timeout=10)


@dataclass(frozen=True)
class Promise:
    """What a tour command (found by ``pattern`` in the README's text of it) must show.

    ``read``: the command only reads, so it is run again until ``holds`` (with a deadline).
    """

    pattern: str
    holds: Callable[[Result], bool]
    read: bool = False


def _outbox_has_tea(result: Result) -> bool:
    return any(
        line.get("reminder") == "tea"
        and line.get("to") == "alice"
        and line.get("text") == "Tea!"
        and line.get("id")
        for line in result.json_lines()
        if isinstance(line, dict)
    )


def _pending_tea(result: Result) -> bool:
    cell = result.json()
    return (
        result.rc == 0
        and isinstance(cell, dict)
        and cell.get("data", {}).get("pending") == {"tea": "Tea!"}
        and [t["name"] for t in cell.get("timers", [])] == ["reminder:tea"]
    )


def _reply(result: Result) -> dict[str, Any]:
    reply = result.json()
    return reply if result.rc == 0 and isinstance(reply, dict) and reply.get("ok") else {}


def _alice_count(count: int) -> Callable[[Result], bool]:
    """``stream-app cells get counter alice`` shows alice alive with this count."""

    def holds(result: Result) -> bool:
        cell = result.json()
        return (
            result.rc == 0
            and isinstance(cell, dict)
            and cell.get("alive") is True
            and cell.get("data") == {"count": count}
        )

    return holds


#: What the tour promises, command by command (every other command must exit 0).
PROMISES = [
    Promise(
        r"^stream-app topics apply --dry-run",
        lambda r: r.succeeded_saying(".counter.in (partitions=8"),
    ),
    Promise(r"^stream-app cells get counter alice", _alice_count(2), read=True),
    Promise(
        r"^stream-app cells list counter",
        lambda r: r.rc == 0 and r.output.strip() == 'alice  {"count":2}',
        read=True,
    ),
    Promise(
        r"^curl localhost:6066/stream-app/dead-letters/",
        lambda r: r.json() == {"malformed-json": 1},
        read=True,
    ),
    Promise(r"^stream-app cells send reminder alice set", lambda r: r.succeeded_saying("sent set")),
    Promise(r"^stream-app cells get reminder alice", _pending_tea, read=True),
    Promise(r"^cat /tmp/outbox.jsonl", _outbox_has_tea, read=True),
    Promise(
        r"^stream-app entities send account alice open",
        lambda r: _reply(r).get("seq") == 1 and _reply(r).get("state", {}).get("balance") == 0,
    ),
    Promise(
        r"^stream-app entities send account alice deposit .* --project balance",
        lambda r: _reply(r).get("seq") == 2 and _reply(r).get("state") == 500,
    ),
    Promise(
        r"^stream-app entities send account alice withdraw",
        lambda r: r.rc == 1 and "rejected 'withdraw': overdraft" in r.errors,
    ),
    Promise(
        r"^stream-app entities get account alice --url http://127.0.0.1:6067",
        lambda r: (
            r.rc == 0
            and r.json()
            == {
                "entity": "account",
                "id": "alice",
                "seq": 2,
                "state": {"owner": "alice", "balance": 500},
                "parked": False,
            }
        ),
        read=True,
    ),
    Promise(
        r"^stream-app entities fold account --app stream_app.examples.ledger",
        lambda r: r.succeeded_saying(
            "account: 2 events, 1 entities rebuilt; 0 differ from the cache, "
            "0 duplicate and 0 missing sequence numbers"
        ),
        read=True,
    ),
    Promise(
        r"^curl -s localhost:6066/stream-app/parked/wallet/",
        lambda r: (
            r.rc == 0
            and "InsufficientFunds: withdraw 99 from a balance of 10"
            in (r.json() or {}).get("w-2", {}).get("error", "")
        ),
        read=True,
    ),
    Promise(
        r"^curl -s localhost:6066/console/",
        lambda r: r.rc == 0 and "<title>Overview · console-demo-" in r.output,
        read=True,
    ),
]

READ_TIMEOUT_S = 60.0


@dataclass
class Tour:
    """Runs the tour's commands in a :class:`TourShell` and checks the promises."""

    shell: TourShell
    subs: dict[str, str]
    kept: list[Promise] = field(default_factory=list)
    ran: list[Result] = field(default_factory=list)

    def promise(self, command: str) -> Promise | None:
        """The promise made for ``command`` (as the README writes it), if any."""
        found = [p for p in PROMISES if re.search(p.pattern, command)]
        assert len(found) <= 1, f"{command!r} matches several promises"
        return found[0] if found else None

    def check(self, command: str, holds: Callable[[Result], bool], *, read: bool) -> Result:
        """Run ``command`` (substituted) until ``holds`` when ``read``, else once, and assert."""
        actual = substitute(command, self.subs)
        if not read:
            result = self.shell.run(actual)
        else:
            try:
                result = wait_for(
                    lambda: self.shell.run(actual), holds, timeout=READ_TIMEOUT_S, what=command
                )
            except ConditionTimeout as exc:
                raise AssertionError(f"{exc}\n{self.context()}") from None
        self.ran.append(result)
        assert holds(result), f"{command!r} -> {result}\n{self.context()}"
        return result

    def command(self, command: str) -> None:
        """Run one line of a shell block as the tour means it."""
        if re.search(r"(^|\s)faust .*\bworker\b", command):
            self.shell.start(substitute(command, self.subs))
            return
        promise = self.promise(command)
        if promise is None:
            self.check(command, lambda r: r.rc == 0, read=False)
        else:
            self.check(command, promise.holds, read=promise.read)
            self.kept.append(promise)

    def block(self, lang: str, code: str) -> None:
        """Run a code block: every command of a shell block, a Python block as one script."""
        if lang in ("bash", "sh"):
            for line in shell_lines(code):
                self.command(line)
        elif lang == "python":
            script = f"python - <<'TOUR_PY'\n{code}TOUR_PY"
            self.check(script, lambda r: r.rc == 0, read=False)

    def context(self) -> str:
        """The last commands run and the workers' log tails, for a failure message."""
        shown = "\n".join(
            f"$ {r.command}\n[{r.rc}] {r.output[-1500:]}\n{r.errors[-1500:]}" for r in self.ran[-6:]
        )
        logs = "\n".join(
            f"--- {w.command} (pid {w.pid}) ---\n{w.log_text()[-3000:]}" for w in self.shell.workers
        )
        return f"--- last commands ---\n{shown}\n{logs}\nsubstitutions: {self.subs}"


@pytest.fixture
def tour_shell(bootstrap: str, tmp_path: Path) -> Iterator[tuple[TourShell, dict[str, str]]]:
    """A bash in a fresh working directory, its environment pointing at the session broker.

    As after ``source .venv/bin/activate``; no ``STREAM_APP_*`` setting from outside. The tour
    runs in the clone's root, where ``topics/`` is; here that folder is named by
    ``STREAM_APP_TOPICS_DIR``. The default web port is a free one (see :func:`substitutions`),
    and the group session timeout 6 s instead of 30 s, so step 6's restart is quicker.
    """
    ports = {"6066": find_free_port(), "6067": find_free_port()}
    venv_bin = Path(sys.executable).parent
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("STREAM_APP_") and k != "KAFKA_BOOTSTRAP_SERVERS"
    }
    env |= {
        "PATH": f"{venv_bin}{os.pathsep}{env.get('PATH', '')}",
        "VIRTUAL_ENV": str(venv_bin.parent),
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "STREAM_APP_TOPICS_DIR": str(ROOT / "topics"),
        "STREAM_APP_WEB_PORT": str(ports["6066"]),
        # Timing only: step 6's restarted worker waits out its killed predecessor's session.
        "STREAM_APP_SESSION_TIMEOUT_S": "6",
    }
    cwd = tmp_path / "clone"
    cwd.mkdir()
    shell = TourShell(cwd, env, tmp_path / "tour-logs")
    steps = tour_steps(README.read_text())
    subs = substitutions(app_ids(steps), uuid.uuid4().hex[:8], ports, tmp_path, bootstrap)
    try:
        yield shell, subs
    finally:
        shell.close()


def test_the_readme_tour_runs_as_written(tour_shell: tuple[TourShell, dict[str, str]]) -> None:
    shell, subs = tour_shell
    steps = tour_steps(README.read_text())
    assert [s.number for s in steps] == list(range(1, len(steps) + 1)), "steps 1, 2, 3, ..."
    tour = Tour(shell, subs)
    print(f"substitutions: {subs}")
    counter_worker: Worker | None = None
    for step in steps:
        if step.number == 1:
            # The session's broker is the one `kafka up` would start (KAFKA_BOOTSTRAP_SERVERS).
            assert "`stream-app kafka up`" in step.text and not step.blocks, step.text
            continue
        if step.number == 6:
            assert "`kill -9` the worker and start it again" in step.text, step.text
            assert counter_worker is not None and not step.blocks, step.text
            counter_worker = crash_and_restart(tour, counter_worker, steps)
            continue
        if step.number == 7:
            assert "Stop the counter worker" in step.text, step.text
            assert counter_worker is not None
            shell.stop(counter_worker, signal.SIGTERM)
        if step.number == 8:
            assert "Stop the workers above" in step.text, step.text
            for worker in shell.workers:
                if alive(worker.pid):
                    shell.stop(worker, signal.SIGTERM)
        started = len(shell.workers)
        for lang, code in step.blocks:
            tour.block(lang, code)
        if step.number == 3:
            assert len(shell.workers) == started + 1, "step 3 starts the counter worker"
            counter_worker = shell.workers[-1]
    missing = [p.pattern for p in PROMISES if p not in tour.kept]
    assert not missing, f"the tour no longer runs these commands: {missing}"
    for worker in shell.workers:
        assert "ConsistencyError" not in worker.log_text(), worker.command


def crash_and_restart(tour: Tour, worker: Worker, steps: list[Step]) -> Worker:
    """Step 6: SIGKILL the counter worker, start it again, and see the count continue."""
    tour.shell.stop(worker, signal.SIGKILL)
    restarted = tour.shell.start(worker.command)
    look = next(
        line for s in steps if s.number == 5 for _, c in s.blocks for line in shell_lines(c)
    )
    tour.check(look, _alice_count(2), read=True)
    produce = next(
        code for s in steps if s.number == 4 for lang, code in s.blocks if lang == "python"
    )
    tour.block("python", produce)
    tour.check(look, _alice_count(4), read=True)
    return restarted
