"""Backups that restore: a backup taken while outbox rows and records imports keep arriving, restored
into a new home, gives the same tables, registry aliases and outbox state as the home at one moment;
the restored home needs nothing of the old one; damaged backups and non-empty homes are refused."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
import time

import pandas as pd
import pytest
from typer.testing import CliRunner

from autopdm import components, store
from autopdm.backup import _rehome, table_rows
from autopdm.cli import app
from autopdm.delivery.outbox import Outbox
from autopdm.ingest import crm
from autopdm.modeling.tracking import client as tracking_client
from autopdm.serving.tokens import TokenStore, db_path

from .procs import fake_work_orders
from .service_fleet import fleet_copy, home_paths

pytestmark = pytest.mark.slow


def aliases(db) -> dict[str, str]:
    """model name → the version its champion alias points at, read from the registry's tables (an MLflow
    client costs seconds to start; the restored home is read through one below)."""
    return dict(rows(db, "SELECT name, version FROM registered_model_aliases WHERE alias = 'champion'"))


def rows(db, sql: str, params=()) -> list[tuple]:
    with sqlite3.connect(db) as con:
        return con.execute(sql, params).fetchall()


@pytest.fixture(scope="module")
def fleet_home(tmp_path_factory):
    return fleet_copy(tmp_path_factory, "backup")


def test_backup_under_load_restores_into_a_new_home(fleet_home, tmp_path_factory, tmp_path):
    home = fleet_home
    paths = home_paths(home)
    pristine = tmp_path_factory.getbasetemp() / "service-fleet-80x200s7" / "var"
    _rehome(paths.mlflow_db, str(pristine.resolve()), str(paths.home))  # the copy's registry: its own artifacts
    tid, _ = TokenStore(db_path(paths)).create("crm", "D001", name="backup test")
    vins = list(store.read_table("vehicles", paths)["vehicle_id"])
    ob = Outbox.open(paths)
    ob.enqueue(fake_work_orders(50))

    stop, written = threading.Event(), {"outbox": 0, "imports": 0}

    def write() -> None:  # what a running service and scorer do meanwhile
        k = 0
        while not stop.is_set():
            ob.enqueue([dict(w, work_order_id=f"{w['work_order_id']}-{k}", vehicle_id=f"WVWZZZ1KZ{k:08d}")
                        for w in fake_work_orders(1)])
            written["outbox"] += 1
            ins = pd.DataFrame([{"inspection_id": f"load-{k}", "vehicle_id": vins[k % len(vins)], "date": "2026-01-05",
                                 "component": "battery", "position": "-", "measurement": "battery_soh_pct",
                                 "value": 80}], dtype=object)
            crm.import_records({"inspections": ins}, paths, origin=f"load-{k}", source="crm")
            written["imports"] += 1
            k += 1

    writer = threading.Thread(target=write)
    writer.start()
    try:
        time.sleep(0.5)
        env = {"AUTOPDM_HOME": str(home)}
        res = CliRunner().invoke(app, ["backup", "--to", str(tmp_path / "bk")], env=env)
        assert res.exit_code == 0, res.output
        assert "backed up" in res.output
    finally:
        stop.set()
        writer.join()
    assert written["outbox"] > 0 and written["imports"] > 0

    # a non-empty home is refused; an empty new one is restored
    res = CliRunner().invoke(app, ["restore", "--from", str(tmp_path / "bk"), "--home", str(home)])
    assert res.exit_code == 1 and "not empty" in res.output
    new = tmp_path / "restored" / "var"
    res = CliRunner().invoke(app, ["restore", "--from", str(tmp_path / "bk"), "--home", str(new)])
    assert res.exit_code == 0, res.output
    npaths = home_paths(new)

    # the outbox as it was at one moment: every restored row is the source's row, the first 50 all there
    src_rows = {r[0]: r for r in rows(paths.outbox, "SELECT * FROM outbox")}
    got = rows(npaths.outbox, "SELECT * FROM outbox")
    assert len(got) >= 50 and all(src_rows[r[0]] == r for r in got)
    assert len(got) < len(src_rows)  # the writer went on after the snapshot
    # records: every batch the restored ledger knows is in the restored table, nothing half-written
    ins = store.read_table("inspections", npaths)
    assert set(ins["inspection_id"]) <= set(store.read_table("inspections", paths)["inspection_id"])
    for name in ("vehicles", "service_events"):
        pd.testing.assert_frame_equal(store.read_table(name, npaths), store.read_table(name, paths))
    pd.testing.assert_frame_equal(store.read_table("features", npaths), store.read_table("features", paths))
    # the token database and the audit trail came along; the revoked/active state too
    assert [t["id"] for t in TokenStore(db_path(npaths)).list()] == [tid]
    # the registry: same aliases, and the restored home loads its champions with the old home gone
    want = aliases(paths.mlflow_db)
    assert len(want) == len(components.names())
    moved = home.with_name("gone")
    home.rename(moved)
    try:
        c = tracking_client(npaths)
        got = {components.get(comp).model_name: str(c.get_model_version_by_alias(
            components.get(comp).model_name, components.CHAMPION_ALIAS).version) for comp in components.names()}
        assert {k: str(v) for k, v in want.items()} == got
        # each champion's files are the restored home's (loading the models would cost seconds more)
        for comp in components.names():
            mv = c.get_model_version_by_alias(components.get(comp).model_name, components.CHAMPION_ALIAS)
            where = rows(npaths.mlflow_db, "SELECT storage_location FROM model_versions WHERE name=? AND version=?",
                         (mv.name, int(mv.version)))[0][0]
            local = Path(where.removeprefix("file://"))
            assert local.is_relative_to(npaths.home) and any(local.rglob("MLmodel")), where
        uris = rows(npaths.mlflow_db, "SELECT artifact_uri FROM runs")
        assert uris and all(str(npaths.home) in u for (u,) in uris)
    finally:
        moved.rename(home)

    # --force moves the current home aside
    res = CliRunner().invoke(app, ["restore", "--from", str(tmp_path / "bk"), "--home", str(new), "--force"])
    assert res.exit_code == 0, res.output
    assert list(new.parent.glob("var.before-restore-*"))
    # a damaged backup is refused before anything is written
    victim = next((tmp_path / "bk" / "home" / "records").glob("*.parquet"))
    victim.write_bytes(victim.read_bytes()[:-10] + b"0123456789")
    res = CliRunner().invoke(app, ["restore", "--from", str(tmp_path / "bk"), "--home", str(tmp_path / "other")])
    assert res.exit_code == 1 and victim.name in res.output and not (tmp_path / "other").exists()


def test_backup_refuses_a_target_inside_the_home_or_not_empty(home, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    for to in (home.home / "bk", tmp_path / "full"):
        res = CliRunner().invoke(app, ["backup", "--to", str(to)])
        assert res.exit_code == 1 and "--to" in res.output


def test_sqlite_copy_counts_rows(tmp_path):
    db = tmp_path / "a.sqlite"
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE t (x)")
        con.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(5)])
    with sqlite3.connect(db) as con:
        assert table_rows(con) == {"t": 5}
