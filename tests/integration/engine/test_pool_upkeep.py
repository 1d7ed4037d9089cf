"""Pool upkeep (``scheduling.pool_upkeep`` → ``PoolManager.upkeep``) with real local minions
(writer agent processes) and an injected clock: retention after the idle time (power off or
delete), refill to the minimum, powered-off minions started again for a transfer."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from coriolis import constants as c
from coriolis.cmd.local_cloud import init_cloud
from coriolis.config import Settings
from coriolis.context import RequestContext
from coriolis.db import models
from coriolis.service import Services, build_all_in_one
from tests.integration.conftest import PROJECT, add_endpoint


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    base = tmp_path_factory.mktemp("upkeep")
    svc = build_all_in_one(Settings(data_dir=base / "data", pool_upkeep_interval=0))
    cloud = init_cloud(base / "data" / "clouds" / PROJECT / "dst", ["lan"])
    try:
        yield {"services": svc, "endpoint": add_endpoint(svc, PROJECT, "dst", cloud),
               "cloud": cloud}
    finally:
        for pool in _pools(svc):
            svc.pools.deallocate(CTX, pool, force=True)
        svc.pools.wait_idle()
        svc.close()


CTX = RequestContext(user_id="u1", project_id=PROJECT, roles=("member",))


def _pools(svc: Services) -> list[str]:
    with svc.db.reader() as session:
        return [p.id for p in session.query(models.MinionPool).all()
                if p.status != c.POOL_STATUS_DEALLOCATED]


class Clock:
    def __init__(self) -> None:
        self.offset = dt.timedelta()

    def __call__(self) -> dt.datetime:
        return models.utcnow() + self.offset


def machines(svc: Services, pool_id: str) -> list[models.MinionMachine]:
    with svc.db.reader() as session:
        pool = session.get(models.MinionPool, pool_id)
        assert pool is not None
        return list(pool.machines)


def events(svc: Services, pool_id: str) -> str:
    with svc.db.reader() as session:
        pool = session.get(models.MinionPool, pool_id)
        assert pool is not None
        return "\n".join(e.message for e in pool.events)


def pid_alive(props: dict) -> bool:
    pid = props.get("pid")
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def make_pool(env: dict, **values: object) -> str:
    svc: Services = env["services"]
    svc.pools.clock = clock = Clock()
    body = {"name": "p", "endpoint_id": env["endpoint"], "platform": "destination",
            "os_type": "linux", "environment_options": {"verbose": False}, **values}
    pool_id = svc.pools.create(CTX, body)
    svc.pools.wait_idle()
    env["clock"] = clock
    with svc.db.reader() as session:
        assert session.get(models.MinionPool, pool_id).status == c.POOL_STATUS_ALLOCATED
    return pool_id


def try_reserve(env: dict, pool_id: str) -> bool | None:
    """A new migration of instance ``vm`` asks ``pool_id`` for a minion (committed)."""
    svc: Services = env["services"]
    with svc.db.session() as session:
        action = models.TransferAction(
            type=c.ACTION_TYPE_MIGRATION, project_id=PROJECT,
            origin_endpoint_id=env["endpoint"], destination_endpoint_id=env["endpoint"],
            destination_minion_pool_id=pool_id, instances=["vm"], info={"vm": {}})
        session.add(action)
        session.flush()
        return svc.pools.reserve(session, action, c.EXECUTION_TYPE_MIGRATION, ["vm"])


def test_delete_retention_keeps_the_minimum_and_refills(env: dict) -> None:
    svc: Services = env["services"]
    pool_id = make_pool(env, minimum_minions=1, maximum_minions=3, minion_max_idle_time=60,
                        minion_retention_strategy="delete")
    svc.pools._fill(pool_id, None, 3)  # grown for transfers earlier, say
    assert len(machines(svc, pool_id)) == 3
    svc.pools.upkeep_pool(pool_id, healthcheck=True)
    assert len(machines(svc, pool_id)) == 3  # not idle long enough yet
    env["clock"].offset = dt.timedelta(seconds=120)
    gone = {m.id: m.provider_properties for m in machines(svc, pool_id)}
    svc.pools.upkeep_pool(pool_id, healthcheck=True)
    left = machines(svc, pool_id)
    assert len(left) == 1 and pid_alive(left[0].provider_properties)
    assert events(svc, pool_id).count("idle for over 60 s: deleted") == 2
    assert [p for m, p in gone.items() if m != left[0].id and pid_alive(p)] == []
    # Below the minimum (a machine vanished): the upkeep refills.
    svc.pools._delete_machine(pool_id, left[0].id, force=True)
    assert machines(svc, pool_id) == []
    svc.pools.upkeep_pool(pool_id, healthcheck=True)
    (new,) = machines(svc, pool_id)
    assert new.allocation_status == c.MINION_STATUS_AVAILABLE
    assert pid_alive(new.provider_properties)
    assert Path(new.provider_properties["directory"]).is_dir()


def test_poweroff_retention_and_wake_up(env: dict) -> None:
    svc: Services = env["services"]
    pool_id = make_pool(env, minimum_minions=2, maximum_minions=2, minion_max_idle_time=30,
                        minion_retention_strategy="poweroff")
    before = {m.id: dict(m.provider_properties) for m in machines(svc, pool_id)}
    env["clock"].offset = dt.timedelta(seconds=31)
    svc.pools.upkeep_pool(pool_id, healthcheck=True)
    after = machines(svc, pool_id)
    assert {m.id for m in after} == set(before)  # kept, not deleted
    assert all(m.power_status == c.MINION_POWER_OFF for m in after)
    assert not any(pid_alive(p) for p in before.values())
    assert all(Path(p["directory"]).is_dir() for p in before.values())
    assert events(svc, pool_id).count("powered off") == 2
    # A transfer asking for a minion wakes one up (in the background).
    assert not try_reserve(env, pool_id)
    deadline = dt.datetime.now() + dt.timedelta(seconds=30)
    while dt.datetime.now() < deadline and not any(
            m.power_status == c.MINION_POWER_ON for m in machines(svc, pool_id)):
        time.sleep(0.1)
    on = [m for m in machines(svc, pool_id) if m.power_status == c.MINION_POWER_ON]
    assert len(on) == 1 and pid_alive(on[0].provider_properties)
    assert "powered on" in events(svc, pool_id)


def test_upkeep_never_acts_on_a_machine_a_transfer_just_took(env: dict) -> None:
    """The upkeep reads a pool's available machines, then checks (and retires) them one by
    one; a transfer reserving a machine meanwhile must get it whole: the check and the
    power-off take the machine out of circulation first (HEALTHCHECKING, POWERING_OFF), so
    the reservation tried during each of them gets nothing, and the reservation tried after
    the upkeep gets a machine that is still powered on... or none, never a powered-off one.
    The interleaving is forced by reserving from inside the upkeep's provider calls."""
    svc: Services = env["services"]
    pool_id = make_pool(env, minimum_minions=1, maximum_minions=1, minion_max_idle_time=30,
                        minion_retention_strategy="poweroff")
    env["clock"].offset = dt.timedelta(seconds=31)
    real_call = svc.pools._call
    during: dict[str, bool | None] = {}

    def call(which: str, operation: str, /, **kwargs: object) -> object:
        if operation in ("healthcheck_minion", "power_off_minion"):
            during[operation] = try_reserve(env, pool_id)
        return real_call(which, operation, **kwargs)

    svc.pools._call = call  # type: ignore[method-assign]
    try:
        svc.pools.upkeep_pool(pool_id, healthcheck=True)
    finally:
        del svc.pools._call
    assert during == {"healthcheck_minion": False, "power_off_minion": False}
    (machine,) = machines(svc, pool_id)
    assert machine.allocated_action is None
    assert machine.allocation_status == c.MINION_STATUS_AVAILABLE
    assert machine.power_status == c.MINION_POWER_OFF
    assert not pid_alive(machine.provider_properties)
