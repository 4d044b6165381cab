"""A changed hbase.speed_ttl_days on an existing installation: /readyz refuses it (naming the table,
the family and both TTLs) until `tally stack up` (provision.create_tables) has altered the tables'
families to the config's TTL, after which HBase reports the new TTL and /readyz is ready."""

from __future__ import annotations

import happybase

from speed_layer import store
from tally.devstack import provision
from tests.integration.speedkit import make_installation

FOREVER = 2**31 - 1  # the TTL HBase reports for a family kept forever


def family_ttls(cfg) -> dict[tuple[str, str], int]:
    conn = happybase.Connection(cfg.hbase.host, cfg.hbase.port, timeout=cfg.hbase.timeout_ms)
    try:
        return {(name, fam.decode()): desc["time_to_live"]
                for name in (cfg.hbase.speed_table, cfg.hbase.top_table, cfg.hbase.meta_table)
                for fam, desc in conn.table(name).families().items()}
    finally:
        conn.close()


def readyz(cfg):
    from serving_layer.app import create_app

    return create_app(cfg.replace(serve={"catalog_ttl_s": 0.0})).test_client().get("/readyz")


def test_changed_ttl_is_refused_by_readyz_then_altered_by_stack_up(stack, unique, tmp_path,
                                                                   capsys, monkeypatch):
    inst = make_installation(stack, tmp_path, unique)  # tables created with the default TTL
    provision.create_lake(inst.cfg)
    old_days = inst.cfg.hbase.speed_ttl_days
    old_s, new_s = old_days * 86400, (old_days + 7) * 86400
    assert family_ttls(inst.cfg) == {(inst.cfg.hbase.speed_table, "m"): old_s,
                                     (inst.cfg.hbase.top_table, "h"): old_s,
                                     (inst.cfg.hbase.meta_table, "p"): FOREVER}
    assert readyz(inst.cfg).status_code == 200

    # The config's TTL changes later: the tables still have the old one.
    cfg = inst.cfg.replace(hbase={"speed_ttl_days": old_days + 7})
    r = readyz(cfg)
    assert r.status_code == 503, r.json
    deps = r.json["dependencies"]
    assert deps["kafka"]["ready"] and deps["lake"]["ready"] and not deps["hbase"]["ready"]
    detail = deps["hbase"]["detail"]
    for text in (f"table {cfg.hbase.speed_table} family m has TTL {old_s}s ({old_days} days)",
                 f"table {cfg.hbase.top_table} family h has TTL {old_s}s",
                 f"the config wants {new_s}s ({old_days + 7} days)", "run `tally stack up`"):
        assert text in detail, detail
    assert cfg.hbase.meta_table not in detail  # kept forever, as wanted

    # What `tally stack up` runs alters both families in one Admin run and says so.
    capsys.readouterr()
    assert provision.create_tables(cfg) == []
    err = capsys.readouterr().err
    for table, fam in ((cfg.hbase.speed_table, "m"), (cfg.hbase.top_table, "h")):
        assert (f"table {table} family {fam}: TTL {old_s}s ({old_days} days) -> "
                f"{new_s}s ({old_days + 7} days) (altered)") in err, err
    assert family_ttls(cfg) == {(cfg.hbase.speed_table, "m"): new_s,
                                (cfg.hbase.top_table, "h"): new_s,
                                (cfg.hbase.meta_table, "p"): FOREVER}
    r = readyz(cfg)
    assert r.status_code == 200, r.json
    assert r.json["dependencies"]["hbase"]["detail"].endswith("TTLs as configured")

    # In line now: a second stack up reads the TTLs over Thrift and starts no JVM.
    def no_jvm(*args, **kwargs):
        raise AssertionError("the Admin program ran although every TTL is as configured")

    monkeypatch.setattr(provision, "create_hbase_tables", no_jvm)
    assert provision.create_tables(cfg) == []
    # The old config, in its turn, is now the one refused.
    assert "run `tally stack up`" in readyz(inst.cfg).json["dependencies"]["hbase"]["detail"]


def test_ttl_mismatches_reads_each_family(stack, unique):
    """The comparison itself, against a table made with a family the config does not know and
    without one it wants."""
    from schemas.rowkey import TableSpec

    name = f"t{unique}_ttl"
    provision.create_table(stack, TableSpec(name, (("m", 3600), ("x", 0)), salted=False))
    conn = happybase.Connection(stack.hbase.host, stack.hbase.port, timeout=stack.hbase.timeout_ms)
    try:
        same = store.ttl_mismatches(conn, [TableSpec(name, (("m", 3600), ("x", 0)), False)])
        differ = store.ttl_mismatches(conn, [TableSpec(name, (("m", 7200), ("y", 60)), False)])
    finally:
        conn.close()
    assert same == []
    assert differ == [store.TtlMismatch(name, "m", 3600, 7200),
                      store.TtlMismatch(name, "y", None, 60)]
    assert differ[1].describe() == (f"table {name} has no family y (the config wants it with "
                                    f"TTL 60s)")
