"""Mutation check: break each durability promise on purpose, in a copy, and see a test fail.

A test that passes whether or not the behaviour it is named after is there proves nothing. For
each entry of MUTATIONS this script copies ``src/`` and ``tests/`` to a temporary directory
(everything else is linked), replaces one exact piece of code with a broken version, and runs the
named tests against the copy (``PYTHONPATH`` points at it). The mutation is *caught* when a test
fails, and *survives* when they all pass. Exit status 1 when any mutation survives, when its old
text is no longer found exactly once (the list has fallen out of step with the code: update the
entry), when the mutated code does not even import, or when the named tests already fail on the
unmutated copy (``--no-baseline`` skips that run).

    make mutation-check                                  # before a release; not part of `make test`
    python scripts/mutation_check.py --list
    python scripts/mutation_check.py --only spool-fsync --only upload-ignores-retry-after

To grow the list (each durability promise in README.md and docs/reliability.md should have an
entry): add a Mutation with the smallest change that removes the behaviour while the code still
imports, and the tests that should notice; run it with ``--only NAME``; if it survives, the tests
do not prove the promise yet: fix them first.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COPIED = ("src", "tests")                       # copied (mutated); the rest of the checkout is linked
NOT_LINKED = {".git", ".venv", "var", "mlruns", ".pytest_cache", "__pycache__", "build", "dist"}


@dataclass(frozen=True)
class Mutation:
    name: str
    promise: str                 # what the README promises, in a few words
    file: str                    # relative to the repository root
    old: str                     # exact text, found exactly once in `file`
    new: str
    tests: tuple[str, ...]       # test files or node ids, relative to the repository root


MUTATIONS: list[Mutation] = [
    # -- ingest: the spool ------------------------------------------------------------------------
    Mutation(
        "spool-fsync", "fsync per batch before commit returns", "src/autopdm/ingest/spool.py",
        "        self._fh.flush()\n        os.fsync(self._fh.fileno())\n        self.seq += 1\n",
        "        self._fh.flush()\n        self.seq += 1\n",
        ("tests/test_ingest_upload.py::test_every_commit_is_fsynced_before_it_returns",)),
    Mutation(
        "spool-writer-lock-ignored", "a live writer's segment is never sealed by another process",
        "src/autopdm/ingest/spool.py",
        "        if p.suffix != OPEN or _writer_alive(p):\n",
        "        if p.suffix != OPEN:\n",
        ("tests/test_ingest_upload.py::test_live_writer_segment_is_not_sealed_by_others",
         "tests/test_ingest_upload.py::test_lock_of_a_live_writer_in_another_process_then_its_crash")),
    # -- ingest: the OBD recorder -----------------------------------------------------------------
    Mutation(
        "recorder-no-backoff", "an absent adapter is retried after a delay", "src/autopdm/ingest/obd.py",
        "                    self._sleep(backoff)\n                    backoff = min(backoff * 2, self.max_backoff)\n",
        "                    backoff = min(backoff * 2, self.max_backoff)\n",
        ("tests/test_ingest_obd_adapters.py::test_recorder_backs_off_while_the_adapter_is_absent",)),
    Mutation(
        "recorder-backoff-not-doubling", "the reconnect delay doubles (0.5 s up to 30 s)", "src/autopdm/ingest/obd.py",
        "                    self._sleep(backoff)\n                    backoff = min(backoff * 2, self.max_backoff)\n",
        "                    self._sleep(backoff)\n                    backoff = min(backoff, self.max_backoff)\n",
        ("tests/test_ingest_obd_adapters.py::test_recorder_backs_off_while_the_adapter_is_absent",)),
    # -- ingest: CAN logs -------------------------------------------------------------------------
    Mutation(
        "canlog-error-without-position", "a cut log's error names the line or frame", "src/autopdm/ingest/canlog.py",
        'super().__init__(f"{path}: unreadable at {position}: {cause} (everything before it was imported)")',
        'super().__init__(f"{path}: unreadable: {cause} (everything before it was imported)")',
        ("tests/test_ingest_can.py::test_truncated_file_keeps_what_was_read_and_names_the_position",
         "tests/test_cli_errors.py::test_ingest_can_bad_logs")),
    Mutation(
        "canlog-wrong-line", "the named line is where the import stopped (candump)", "src/autopdm/ingest/canlog.py",
        "  # the file ends mid-line: a cut-off frame would decode wrong\n"
        "                    out.bad_line(n, \"the file ends in the middle of this line (cut short?)\", line)\n"
        "                    out.error = CanLogError(path, f\"line {n}\",",
        "  # the file ends mid-line: a cut-off frame would decode wrong\n"
        "                    out.bad_line(n, \"the file ends in the middle of this line (cut short?)\", line)\n"
        "                    out.error = CanLogError(path, f\"line {n - 40}\",",
        ("tests/test_ingest_can.py::test_truncated_file_keeps_what_was_read_and_names_the_position[.log]",
         "tests/test_ingest_can.py::test_truncated_file_keeps_what_was_read_and_names_the_position[.log.gz]")),
    Mutation(
        "canlog-wrong-frame", "the named frame is where the import stopped (a cut TRC or CSV log)",
        "src/autopdm/ingest/canlog.py",
        '            CanLogError(path, f"frame {n + 1} (end of file)", "file ends in the middle of a line")\n    except',
        '            CanLogError(path, f"frame {n + 21} (end of file)", "file ends in the middle of a line")\n    except',
        ("tests/test_ingest_can.py::test_truncated_file_keeps_what_was_read_and_names_the_position[.trc]",
         "tests/test_ingest_can.py::test_truncated_file_keeps_what_was_read_and_names_the_position[.csv]")),
    Mutation(
        "canlog-wrong-frame-blf", "the named frame is where the import stopped (a cut BLF log)",
        "src/autopdm/ingest/canlog.py",
        '            return CanLogError(path, f"frame {n + 1} (byte {size:,} of {reader.file_size:,})",\n',
        '            return CanLogError(path, f"frame {n + 21} (byte {size:,} of {reader.file_size:,})",\n',
        ("tests/test_ingest_can.py::test_truncated_file_keeps_what_was_read_and_names_the_position[.blf]",)),
    Mutation(
        "canlog-wrong-frame-mid-file", "the named frame is where a reader failed mid-file",
        "src/autopdm/ingest/canlog.py",
        '    pos = f"frame {n + 1}"\n',
        '    pos = f"frame {n + 21}"\n',
        ("tests/test_ingest_can.py::test_corrupt_container_mid_blf_names_the_frame_and_keeps_what_came_before",)),
    # -- ingest: upload ---------------------------------------------------------------------------
    Mutation(
        "upload-ignores-retry-after", "upload waits as long as Retry-After asks", "src/autopdm/ingest/upload.py",
        "        wait = asked if asked is not None else delay * (0.8 + 0.4 * random.random())\n",
        "        wait = delay * (0.8 + 0.4 * random.random())\n",
        ("tests/test_ingest_upload.py::test_upload_waits_as_long_as_retry_after_says",
         "tests/test_ingest_upload.py::test_upload_uses_http_date_retry_after")),
    Mutation(
        "upload-no-retry-on-5xx", "upload retries network errors, 408, 429 and 5xx", "src/autopdm/ingest/upload.py",
        "            if r.status_code >= 500 or r.status_code in RETRY_STATUS:\n",
        "            if False:\n",
        ("tests/test_ingest_upload.py::test_upload_retries_and_deletes_only_acknowledged",)),
    # -- ingest: quarantine -----------------------------------------------------------------------
    Mutation(
        "quarantine-disabled", "one bad file never takes the good ones with it", "src/autopdm/ingest/csvlogs.py",
        "        except CsvFormatError as exc:\n            if not keep_going:\n                raise\n",
        "        except CsvFormatError as exc:\n            raise\n",
        ("tests/test_cli_errors.py::test_many_files_one_summary_each_in_a_real_process",)),
    Mutation(
        "bad-line-stops-the-file", "a bad line is quarantined, the lines after it are still read",
        "src/autopdm/ingest/canlog.py",
        '        out.bad_line(n, f"not a candump frame ({exc})", line)\n        return\n',
        '        raise\n',
        ("tests/test_ingest_can.py::test_bad_line_in_the_middle_is_skipped_not_fatal",)),
    # -- serving ----------------------------------------------------------------------------------
    Mutation(
        "telemetry-batch-id-reuse-accepted", "a batch id reused with other content is a 409",
        "src/autopdm/serving/ledger.py",
        "                if row[2] is not None and row[2] != digest:\n",
        "                if False:\n",
        # in process on real SQLite; the same promise through a real server (slower):
        # tests/test_service_api.py::test_telemetry_batch_id_reused_for_other_content_is_409
        ("tests/test_telemetry_ledger.py",)),
    Mutation(
        "batch-failure-fails-everyone", "one caller's bad request never fails the others in its batch",
        "src/autopdm/serving/batching.py",
        "            return [self._isolated([it])[0] for it in items]\n",
        "            return [exc] * len(items)\n",
        ("tests/test_service_isolation.py::test_batcher_fails_only_the_request_that_raises",)),
    # -- delivery ---------------------------------------------------------------------------------
    Mutation(
        "outbox-lease-ignored", "two dispatchers at once deliver each work order once",
        "src/autopdm/delivery/outbox.py",
        "                    if owner and owner != me and until > now:\n",
        "                    if False:\n",
        ("tests/test_delivery_concurrency.py::test_two_dispatchers_deliver_each_work_order_exactly_once",)),
    Mutation(
        "outbox-idempotency-key-per-attempt", "a resend carries the same Idempotency-Key, stored once",
        "src/autopdm/delivery/dispatcher.py",
        '        return Message(row["work_order_id"], body.encode("utf-8"))\n',
        '        return Message(f\'{row["work_order_id"]}.{row["attempts"]}\', body.encode("utf-8"))\n',
        ("tests/test_delivery_idempotency.py",)),
    Mutation(
        "webhook-signature-wrong-content", "every delivery carries a valid Standard Webhooks signature",
        "src/autopdm/delivery/signing.py",
        '            "webhook-signature": wh.sign(msg_id, ts, body.decode("utf-8"))}\n',
        '            "webhook-signature": wh.sign(msg_id, ts, body.decode("utf-8").strip("}"))}\n',
        ("tests/test_delivery_signing.py",)),
    Mutation(
        "crm-5xx-parked", "a CRM's 5xx is retried with backoff, not given up on", "src/autopdm/delivery/webhook.py",
        "    permanent = 400 <= code < 500 and code not in RETRYABLE_4XX\n",
        "    permanent = code >= 400 and code not in RETRYABLE_4XX\n",
        ("tests/test_outbox.py::test_statuses_5xx_retry_4xx_park_2xx_deliver",)),
    # -- training ---------------------------------------------------------------------------------
    Mutation(
        "gate-always-promotes", "the champion moves only for a candidate at least as good",
        "src/autopdm/modeling/train.py",
        '    if worse:\n        return False, "rejected: " + "; ".join(worse)\n',
        '    if False:\n        return False, "rejected: " + "; ".join(worse)\n',
        ("tests/test_train.py::test_gate_decision_rules",)),
    Mutation(
        "training-lock-skipped", "one training per home at a time", "src/autopdm/modeling/lock.py",
        "            with modeling_lock(paths or Paths.from_env(), what):\n                return fn(paths, *args, **kwargs)\n",
        "            return fn(paths, *args, **kwargs)\n",
        ("tests/test_train_lock.py::test_second_training_refuses_with_one_line",)),
]


# -- running -------------------------------------------------------------------------------------

def make_copy(dest: Path) -> Path:
    """src/ and tests/ copied (no bytecode), every other top-level entry linked."""
    dest.mkdir(parents=True)
    for entry in ROOT.iterdir():
        if entry.name in COPIED:
            shutil.copytree(entry, dest / entry.name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif entry.name not in NOT_LINKED:
            (dest / entry.name).symlink_to(entry)
    return dest


def env_for(copy: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(PYTHONPATH=str(copy / "src"), PYTHONDONTWRITEBYTECODE="1", BENTOML_DO_NOT_TRACK="true",
               DO_NOT_TRACK="true", MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK="true", AUTOPDM_HOME=str(copy / "var"))
    return env


def check_imports_from(copy: Path) -> None:
    """The copy's code is what runs (an installed autopdm must not shadow it)."""
    r = subprocess.run([sys.executable, "-c", "import autopdm; print(autopdm.__file__)"], env=env_for(copy),
                       capture_output=True, text=True, cwd=copy)
    if not r.stdout.strip().startswith(str(copy / "src")):
        sys.exit(f"mutation check: autopdm imports from {r.stdout.strip() or r.stderr.strip()!r}, "
                 f"not from the copy {copy / 'src'}")


@dataclass
class Outcome:
    status: str      # caught | SURVIVED | STALE | BROKEN | BASELINE FAILS
    detail: str
    seconds: float = 0.0


def run_tests(copy: Path, tests: tuple[str, ...], timeout: int, first_failure: bool = True) -> tuple[int, str]:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfE", f"--timeout={timeout}",
           *(["-x"] if first_failure else []), *tests]
    r = subprocess.run(cmd, cwd=copy, env=env_for(copy), capture_output=True, text=True)
    return r.returncode, r.stdout + r.stderr


def failed_tests(output: str) -> list[str]:
    return re.findall(r"^(?:FAILED|ERROR) (\S+)", output, flags=re.M)


def apply(copy: Path, m: Mutation) -> str | None:
    """Mutate the copy; an error message when the old text is not there exactly once."""
    f = copy / m.file
    if not f.exists():
        return f"{m.file} does not exist"
    text = f.read_text()
    n = text.count(m.old)
    if n != 1:
        return f"old text found {n} times in {m.file} (expected once): update the entry"
    f.write_text(text.replace(m.old, m.new))
    return None


def check(m: Mutation, work: Path, timeout: int) -> Outcome:
    t0 = time.monotonic()
    copy = make_copy(work / m.name)
    try:
        problem = apply(copy, m)
        if problem:
            return Outcome("STALE", problem)
        code, out = run_tests(copy, m.tests, timeout)
        dt = time.monotonic() - t0
        if code == 0:
            return Outcome("SURVIVED", "every named test passed with the behaviour removed", dt)
        failed = failed_tests(out)
        if code == 1 and failed:
            return Outcome("caught", "caught by " + ", ".join(failed), dt)
        tail = "\n".join(out.strip().splitlines()[-15:])
        return Outcome("BROKEN", f"pytest exit {code} (collection or import error?):\n{tail}", dt)
    finally:
        shutil.rmtree(copy, ignore_errors=True)


def baseline(selected: list[Mutation], work: Path, timeout: int) -> tuple[bool, str, float]:
    """Every named test passes on the unmutated copy (else 'caught' would mean nothing)."""
    t0 = time.monotonic()
    copy = make_copy(work / "baseline")
    check_imports_from(copy)
    tests = tuple(dict.fromkeys(t for m in selected for t in m.tests))
    code, out = run_tests(copy, tests, timeout, first_failure=False)
    shutil.rmtree(copy, ignore_errors=True)
    summary = out.strip().splitlines()[-1] if out.strip() else ""
    return code == 0, (summary if code == 0 else out[-4000:]), time.monotonic() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", action="append", default=[], help="run only this mutation (repeatable)")
    ap.add_argument("--list", action="store_true", help="print the mutations and exit")
    ap.add_argument("--no-baseline", action="store_true", help="skip the run of the named tests on the unmutated copy")
    ap.add_argument("--timeout", type=int, default=300, help="per-test timeout in seconds (a hang counts as caught)")
    args = ap.parse_args(argv)

    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 160)
    names = {m.name for m in MUTATIONS}
    assert len(names) == len(MUTATIONS), "mutation names must be unique"
    unknown = [n for n in args.only if n not in names]
    if unknown:
        console.print(f"unknown mutation(s): {', '.join(unknown)}; known: {', '.join(sorted(names))}")
        return 2
    selected = [m for m in MUTATIONS if not args.only or m.name in args.only]

    if args.list:
        t = Table(title="mutations", show_lines=True)
        for col in ("mutation", "promise", "file", "tests"):
            t.add_column(col, overflow="fold")
        for m in selected:
            t.add_row(m.name, m.promise, m.file, "\n".join(m.tests))
        console.print(t)
        return 0

    t_all = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="autopdm-mutation-") as tmp:
        work = Path(tmp)
        if not args.no_baseline:
            with console.status("baseline: the named tests on the unmutated code"):
                ok, summary, dt = baseline(selected, work, args.timeout)
            console.print(f"baseline ({dt:.0f} s): {summary}")
            if not ok:
                console.print("[red]the named tests fail without any mutation: fix them first[/red]")
                return 1
        else:
            probe = make_copy(work / "probe")
            check_imports_from(probe)
            shutil.rmtree(probe)
        results = []
        for i, m in enumerate(selected, start=1):
            with console.status(f"[{i}/{len(selected)}] {m.name}: {len(m.tests)} test selection(s)"):
                o = check(m, work, args.timeout)
            console.print(f"[{i}/{len(selected)}] {m.name}: {o.status} ({o.seconds:.0f} s)")
            results.append((m, o))

    table = Table(title=f"mutation check: {len(selected)} mutation(s), {time.monotonic() - t_all:.0f} s", show_lines=True)
    table.add_column("mutation", overflow="fold")
    table.add_column("promise broken", overflow="fold")
    table.add_column("file (src/autopdm/)", overflow="fold")
    table.add_column("result", no_wrap=True)
    table.add_column("caught by / why not", overflow="fold")
    table.add_column("s", justify="right")
    for m, o in results:
        style = "green" if o.status == "caught" else "bold red"
        detail = o.detail.removeprefix("caught by ").replace("tests/", "")
        table.add_row(m.name, m.promise, m.file.removeprefix("src/autopdm/"), f"[{style}]{o.status}[/{style}]",
                      detail, f"{o.seconds:.0f}")
    console.print(table)
    bad = [m.name for m, o in results if o.status != "caught"]
    if bad:
        console.print(f"[bold red]{len(bad)} not caught:[/bold red] {', '.join(bad)}")
        return 1
    console.print(f"[green]all {len(results)} mutations caught[/green]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
