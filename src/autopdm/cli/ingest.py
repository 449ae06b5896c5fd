"""`autopdm ingest csv|obd|can` and `autopdm upload`."""

from __future__ import annotations

import contextlib
import signal
import sys
import time
from pathlib import Path
from typing import List, Optional

import typer
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from autopdm import compact
from autopdm.cli.common import clear_errors, console, fail, paths, progress
from autopdm.ingest import can as can_ingest
from autopdm.ingest import canlive
from autopdm.ingest import crm_files, crm_map
from autopdm.ingest import csvlogs
from autopdm.ingest import upload as up
from autopdm.ingest.codecs import dbc as dbc_mod

ingest_app = typer.Typer(help="Record or import telemetry into canonical samples, and the workshop's records from its CRM.",
                         no_args_is_help=True)


@ingest_app.command("csv")
def ingest_csv(
    files: List[Path] = typer.Argument(..., help="logger CSV files"),
    format: str = typer.Option(..., "--format", help="carobd | torque"),
    vehicle_id: Optional[str] = typer.Option(None, "--vehicle-id", help="VIN to record under (17 characters)"),
    start: Optional[str] = typer.Option(None, "--start", help="UTC time of the first row, for logs without timestamps"),
) -> None:
    """Import third-party CSV logs. Exit status 0: every row imported; 1: rows quarantined or a file
    unreadable (the rest imported, a summary per file); 2: bad options."""
    with clear_errors(csvlogs.CsvFormatError):
        csvlogs.check_args(format, vehicle_id)
    p = paths()
    with clear_errors(csvlogs.CsvFormatError), progress() as bar:
        task = bar.add_task(f"importing {format}", total=len(files))
        results = csvlogs.import_files(files, format, vehicle_id, start, p, progress=lambda _: bar.advance(task),
                                       keep_going=True)
    for r in results:
        if r.error:
            console.print(f"[red]error:[/red] {escape(r.error)}")
            continue
        extra = f", unknown columns: {', '.join(r.unknown_columns)}" if r.unknown_columns else ""
        console.print(escape(f"{r.path}: {r.written} samples, {r.quarantined} quarantined{extra}"))
        for why in r.reasons[:3]:
            console.print(escape(f"  quarantined {r.path.name} {why}"))
    _auto_compact(p)
    _exit_for(sum(r.quarantined for r in results), sum(bool(r.error) for r in results), len(results))


def _auto_compact(p) -> None:
    """A large import leaves many small files: merge them now (AUTOPDM_COMPACT_AFTER_FILES)."""
    with clear_errors(compact.CompactionBusy):
        res = compact.after_import(p)
    if res is not None and res.vehicles:
        console.print(f"store compacted: {res.files_before:,} files of {res.vehicles} vehicle(s) merged")


def _exit_for(quarantined: int, failed: int, files: int) -> None:
    """Exit 1 (with a closing line) when anything was quarantined or a file could not be read."""
    if quarantined or failed:
        console.print(f"{files} file(s): {failed} unreadable, {quarantined:,} record(s) quarantined "
                      "(reasons: var/telemetry/quarantine/, `autopdm` keeps every good record)")
        raise typer.Exit(1)


@ingest_app.command("crm")
def ingest_crm(
    vehicles: Optional[Path] = typer.Option(None, "--vehicles", help="the CRM's vehicles export"),
    service_events: Optional[Path] = typer.Option(None, "--service-events", help="its service history (visits, repairs)"),
    inspections: Optional[Path] = typer.Option(None, "--inspections", help="its inspection readings (pads, tread, battery tests)"),
    outcomes: Optional[Path] = typer.Option(None, "--outcomes", help="what became of autopdm's work orders"),
    map_file: Optional[Path] = typer.Option(None, "--map", help="YAML: the CRM's column names, values and date formats → ours"),
) -> None:
    """Import the workshop's records from a CRM export: CSV or JSON Lines by suffix (.csv, .jsonl,
    .ndjson, and .gz of each). Rows are validated one by one and upserted by their natural keys, so
    importing the same export again changes nothing. Exit status 0: every row imported; 1: rows
    quarantined or a file unreadable (the rest imported, a summary per table); 2: bad options."""
    files = {t: f for t, f in (("vehicles", vehicles), ("service_events", service_events),
                               ("inspections", inspections), ("outcomes", outcomes)) if f is not None}
    if not files:
        raise fail("give at least one of --vehicles, --service-events, --inspections, --outcomes")
    with clear_errors(crm_map.MapError):
        cmap = crm_map.load(map_file)
    p = paths()
    t0 = time.perf_counter()
    with console.status("importing records"):
        reports = crm_files.import_exports(files, p, cmap)
    for r in reports:
        _print_crm_report(r)
    rows = sum(r.rows for r in reports)
    console.print(f"{rows:,} row(s) in {time.perf_counter() - t0:.1f} s")
    failed, quarantined = sum(bool(r.error) for r in reports), sum(r.quarantined for r in reports)
    if failed or quarantined:
        what = [f"{failed} file(s) unreadable"] * bool(failed) + \
            [f"{quarantined:,} row(s) quarantined (reasons: {p.records / 'quarantine'}/)"] * bool(quarantined)
        console.print(escape("; ".join(what) + "; every good row was imported"), soft_wrap=True)
        raise typer.Exit(1)


def _print_crm_report(r: crm_files.FileReport) -> None:
    if r.error:
        console.print(f"[red]error:[/red] {escape(r.error)}", soft_wrap=True)
        return
    console.print(escape(f"{r.table} ({r.path}): {r.rows:,} row(s): {r.new:,} new, {r.changed:,} changed, "
                         f"{r.unchanged:,} unchanged, {r.quarantined:,} quarantined"), soft_wrap=True)
    if r.ignored_columns:
        console.print(escape(f"  columns not kept: {', '.join(r.ignored_columns)}"), soft_wrap=True)
    for why in r.reasons[:5]:
        console.print(escape(f"  quarantined {r.path.name} {why}"), soft_wrap=True)


@contextlib.contextmanager
def _stop_on_signals(stop):
    """Ctrl-C / SIGTERM ask the recorder to stop (it then commits and flushes) instead of raising
    in the middle of a write. Previous handlers come back afterwards."""
    sigs = (signal.SIGINT, signal.SIGTERM)
    try:
        old = {s: signal.signal(s, lambda *_: stop()) for s in sigs}
    except ValueError:  # not the main thread: no signal handling
        yield
        return
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _render_obd(stats):
    t = Table(title=f"autopdm ingest obd — {stats.state}", show_header=False, expand=False)
    t.add_column(style="bold")
    t.add_column()
    t.add_row("vehicle", str(stats.vehicle_id or "?"))
    t.add_row("protocol", stats.protocol or "?")
    t.add_row("adapter and ECU", stats.capabilities or "?")
    t.add_row("samples/s", f"{stats.rate_samples:.1f}  (requests/s {stats.rate_queries:.1f})")
    t.add_row("samples", f"{stats.samples:,} in {stats.batches:,} committed batches")
    t.add_row("trips closed / reconnects", f"{stats.trips_closed} / {stats.reconnects}")
    t.add_row("DTC events / negative answers", f"{stats.dtc_events} / {stats.negative_responses}")
    for k, v in sorted(stats.last_values.items()):
        t.add_row(k, f"{v:.1f}" if isinstance(v, float) else str(v))
    for e in stats.events[-4:]:
        t.add_row("", e)
    return t


@ingest_app.command("obd")
def ingest_obd(
    port: str = typer.Option(..., "--port", help="serial path, rfcomm device or socket://host:35000"),
    vehicle_id: Optional[str] = typer.Option(None, "--vehicle-id", help="VIN to use when the car does not report one"),
    duration: Optional[float] = typer.Option(None, "--duration", help="stop after S seconds (default: until Ctrl-C)"),
    interval: float = typer.Option(0.1, "--interval", help="minimum seconds between polling cycles (0 = as fast as the adapter answers)"),
    batch_interval: float = typer.Option(1.0, "--batch-seconds", help="seconds of samples per spool batch (fsync each)"),
    dtc_interval: float = typer.Option(60.0, "--dtc-interval", help="seconds between stored/pending DTC reads"),
    baudrate: Optional[int] = typer.Option(None, "--baudrate", help="adapter baud rate (default: auto)"),
    protocol: Optional[str] = typer.Option(None, "--protocol", help="ELM protocol number 1-9/A (default: auto)"),
    single_pid: bool = typer.Option(False, "--single-pid", help="one PID per request (for ECUs that reject multi-PID requests)"),
    print_batches: bool = typer.Option(False, "--print-batches", help="print each committed batch id on stdout"),
) -> None:
    """Record live from an ELM327 dongle (python-OBD): spool first, then the store. Exit status 1
    when no adapter answered on PORT during --duration; 2 for bad options."""
    obd_ingest = _obd_module()
    with clear_errors(obd_ingest.PortError):
        obd_ingest.check_port(port)
    p = paths()
    on_batch = None
    if print_batches:
        def on_batch(bid, n):
            print(f"committed {bid} samples={n}", flush=True)
    with clear_errors(obd_ingest.VinError):
        rec = obd_ingest.ObdRecorder(port, p, vehicle_id, duration, interval=interval, batch_interval=batch_interval,
                                     dtc_interval=dtc_interval, baudrate=baudrate, protocol=protocol,
                                     multi_pid=not single_pid, on_batch=on_batch)
        with _stop_on_signals(rec.stop):
            if console.is_terminal:
                with Live(get_renderable=lambda: _render_obd(rec.stats), console=console, refresh_per_second=4):
                    stats = rec.run()
            else:
                stats = rec.run()
    for e in stats.events:
        console.print(escape(e))
    elapsed = max(1e-9, time.monotonic() - stats.started)
    console.print(f"{stats.samples:,} samples, {stats.dtc_events} DTC events in {stats.batches} batches "
                  f"({stats.samples / elapsed:.1f} samples/s, {stats.queries / elapsed:.1f} requests/s); "
                  f"{stats.trips_closed} trip(s) closed, {stats.reconnects} reconnect(s); vehicle {stats.vehicle_id}")
    sys.stdout.flush()
    if not stats.adapter_seen:
        raise fail(f"--port {port}: no ELM327 adapter answered in {elapsed:.0f} s", code=1)


def _obd_module():
    """python-OBD is GPL-2.0-only: imported only by this command, and optional."""
    try:
        from autopdm.ingest import obd as obd_ingest
    except ModuleNotFoundError as exc:
        if exc.name in ("obd", "serial", "pint"):
            raise fail(f"python-OBD is not installed ({exc.name}): pip install 'autopdm[obd]'") from None
        raise
    return obd_ingest


@ingest_app.command("can")
def ingest_can(
    log: Optional[List[Path]] = typer.Option(None, "--log", help="log file(s): .asc .blf .trc .log .csv .mf4 .db (and .gz)"),
    interface: Optional[str] = typer.Option(None, "--interface", help="python-can interface (socketcan, pcan, virtual, ...)"),
    channel: Optional[str] = typer.Option(None, "--channel", help="bus channel (can0, PCAN_USBBUS1, ...)"),
    dbc: Optional[str] = typer.Option(None, "--dbc", help="DBC file (or opendbc:NAME.dbc) for manufacturer signals"),
    signals: Optional[Path] = typer.Option(None, "--signals", help="signals map YAML: canonical column → DBC message/signal"),
    vehicle_id: Optional[str] = typer.Option(None, "--vehicle-id", help="VIN when the traffic carries none"),
    duration: Optional[float] = typer.Option(None, "--duration", help="live bus: stop after S seconds"),
    listen_only: bool = typer.Option(False, "--listen-only", help="live bus: do not send OBD requests, only decode traffic"),
    extended: bool = typer.Option(False, "--29bit", help="live bus: send 29-bit OBD requests (0x18DB33F1)"),
    resolution: float = typer.Option(1.0, "--resolution", help="seconds per sample row"),
) -> None:
    """Import CAN logs or record a live bus: OBD-II over ISO-TP, and DBC signals. Exit status 0:
    everything imported; 1: lines quarantined or a log cut short (the rest imported, a summary per
    file); 2: bad options."""
    if bool(log) == bool(interface):
        raise fail("give either --log FILE or --interface I --channel C")
    if interface and not channel:
        raise fail("--interface needs --channel")
    if bool(dbc) and not signals:
        raise fail("--dbc needs --signals MAP.yaml (which signal is which canonical column)")
    p = paths()
    with clear_errors(dbc_mod.SignalMapError, can_ingest.VehicleIdError, FileNotFoundError):
        decoder = dbc_mod.DbcDecoder(dbc, signals) if signals else None
        if vehicle_id is not None:
            can_ingest.check_vehicle_id(vehicle_id)
    if log:
        reports = [_import_one(f, p, vehicle_id, decoder, resolution) for f in log]
    else:
        with clear_errors(can_ingest.VehicleIdError, canlive.BusError):
            stop = {"flag": False}
            with _stop_on_signals(lambda: stop.__setitem__("flag", True)), console.status(f"recording {interface}:{channel}"):
                reports = [canlive.record_bus(interface, channel, p, vehicle_id, decoder, duration,
                                              query=not listen_only, extended=extended, resolution=resolution,
                                              stop=lambda: stop["flag"])]
    for r in reports:
        _print_can_report(r)
    _auto_compact(p)
    if any(r.usage_error for r in reports):
        raise typer.Exit(2)
    _exit_for(sum(r.quarantined for r in reports), sum(bool(r.error) for r in reports), len(reports))


def _import_one(f: Path, p, vehicle_id, decoder, resolution):
    """One log; what goes wrong with it is in its report, never an exception that stops the others."""
    try:
        return can_ingest.import_log(f, p, vehicle_id, dbc=decoder, resolution=resolution)
    except (can_ingest.VehicleIdError, FileNotFoundError) as exc:  # the input; not the store
        msg = str(exc) if not isinstance(exc, OSError) or not exc.strerror else f"{f}: {exc.strerror}"
        return can_ingest.CanImportReport(str(f), error=msg, usage_error=isinstance(exc, can_ingest.VehicleIdError))


def _print_can_report(r) -> None:
    kinds = f"{r.error_frames:,} error, {r.remote_frames:,} remote, {r.fd_frames:,} CAN FD frames"
    console.print(escape(f"{r.path}: {r.frames:,} frames read ({kinds}), {r.decoded:,} decoded, {r.skipped:,} skipped, "
                  f"{r.negative_responses:,} negative responses; {r.samples:,} samples, {r.dtc_events} DTC events "
                  f"for {r.vehicle_id or '-'}; {r.quarantined:,} quarantined "
                  f"({r.frames_per_s:,.0f} frames/s, {r.reader or '-'}; ECUs {', '.join(r.ecus) or '-'})"))
    if r.isotp_timeouts:
        console.print(f"  {r.isotp_timeouts} answer(s) dropped: the ECU stopped sending mid-answer (ISO-TP N_Cr)")
    if r.error:
        console.print(f"[red]error:[/red] {escape(r.error)}")


def upload_cmd(
    url: str = typer.Option(..., "--url", help="service base URL; batches go to {URL}/telemetry"),
    token: Optional[str] = typer.Option(None, "--token", envvar="AUTOPDM_API_TOKEN", help="bearer token (default $AUTOPDM_API_TOKEN)"),
    max_attempts: int = typer.Option(8, "--max-attempts", help="tries per batch before giving up (backoff doubles)"),
) -> None:
    """Send spooled batches to the service; delete segments once acknowledged."""
    p = paths()
    pending = up.count_pending(p)
    if not pending:
        console.print("spool is empty: nothing to upload")
        return
    with clear_errors(up.UploadError), progress() as bar:
        task = bar.add_task("uploading", total=pending)
        rep = up.upload(p, url, token, max_attempts=max_attempts, progress=lambda n: bar.advance(task, n))
    console.print(f"{rep.batches_sent} batches acknowledged: {rep.accepted:,} accepted, {rep.quarantined:,} quarantined "
                  f"by the server, {rep.duplicates} already known; {rep.retries} retries; "
                  f"{rep.segments_deleted} segment(s) removed, {rep.segments_kept} kept")
    for c in rep.corrupt:
        console.print(f"[yellow]unreadable spool line kept aside:[/yellow] {escape(c)}")


def register(app: typer.Typer) -> None:
    app.add_typer(ingest_app, name="ingest")
    app.command("upload")(upload_cmd)
