"""A real OpenStack cloud (from PyPI) on loopback, for tests of the ``openstack`` provider:
Keystone, Glance, Cinder, Neutron, Placement and Nova from one cached virtualenv
(``~/.cache/coriolis/openstack/cloud-<hash>``), SQLite databases, RPC over the machine's
RabbitMQ in a virtual host of its own, every API served by uWSGI.

What is real and what stands in (see docs/reference: platform-backends.md, OpenStack):
- Cinder runs its NFS driver on a local directory bind-mounted at the driver's own mount point
  (``<mount base>/<md5 of the share>``), so volumes are real files a worker on this host opens;
  the kernel has no NFS client, the driver only checks that ``mount.nfs`` exists.
- Neutron is neutron-server's API with ML2 (``flat`` and ``vlan`` networks on ``physnet1``)
  and the ``openvswitch`` mechanism driver, but no agent runs: one Open vSwitch agent row for
  the compute host is written into Neutron's database (what the agent's first state report
  would write) with the largest ``agent_down_time`` (24 days), so ports bind (``binding:vif_type``
  ``ovs``) and stay ``DOWN``. Neutron's own ``test`` mechanism driver was tried first: its
  assertions fail when Nova binds an existing port (``context.original`` is set).
- Nova's compute runs ``fake.FakeDriver`` (``coriolis.openstack_fake_compute``: the same
  with a ``createImage`` snapshot that uploads the server's base image into the new Glance
  image, as a guest that never wrote its disk would give): servers reach ACTIVE and volumes
  get attached in Cinder's and Nova's bookkeeping, but no guest runs.

Notes that cost time to find out: every WSGI service takes its configuration file through
uWSGI's ``--pyargv`` (or its ``OS_*_CONFIG_DIR``); Glance needs ``--http-raw-body`` for chunked
uploads; Neutron's schema is created from its models on SQLite (its migrations need ALTER).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coriolis import leftovers as owned_folders
from coriolis import openstack_services as ops

CONSTRAINTS = Path(__file__).with_name("openstack-upper-constraints.txt")
CLOUD_PACKAGES = ("keystone==30.0.0", "glance==33.0.0", "cinder==29.0.0", "nova==33.0.2",
                  "openstack-placement==16.0.0", "neutron==29.0.0", "uwsgi==2.0.31",
                  "pyroute2")  # neutron imports pyroute2 without requiring it
REGION = "RegionOne"
NFS_SHARE = "127.0.0.1:/export"
COMPUTE_HOST = "coriolis-compute"  # Nova's compute host and its (stand-in) Open vSwitch agent
RABBIT = "127.0.0.1:5672"


def cloud_venv() -> Path:
    """The virtualenv with every service, built once (about 2.5 min, under ``nice``)."""
    return ops.venv("cloud", CLOUD_PACKAGES, CONSTRAINTS)


@dataclass
class OpenStackCloud:
    """A running cloud. ``auth`` is the keyword set for ``openstack.connect(**cloud.auth)``
    (project ``admin``, role admin); ``exports`` maps each NFS share Cinder reports in
    ``initialize_connection`` (``data.export``) to the local directory holding its files
    (``data.name`` inside it is the volume's raw file)."""

    work: Path
    keystone: ops.Keystone
    auth: dict[str, str]
    endpoints: dict[str, str]  # service type -> URL
    exports: dict[str, Path]
    volume_backend_name: str = "nfs"
    volume_type: str = "nfs"  # the default type, volume_backend_name=nfs
    volume_type_other: str = "nfs-gold"  # a second type on the same backend, for mappings
    flavors: dict[str, str] = field(default_factory=dict)  # name -> id
    image_id: str = ""  # a 1 MiB raw image "cirros-raw" in Glance
    network_id: str = ""  # "private": vlan network with subnet 10.10.0.0/24
    subnet_id: str = ""
    network_other_id: str = ""  # "public": flat network on physnet1, subnet 172.24.4.0/24
    startup_seconds: float = 0.0
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _cleanups: list[Callable[[], None]] = field(default_factory=list)

    def connect(self) -> Any:
        """An ``openstack.connection.Connection`` as the admin user."""
        import openstack

        return openstack.connect(**self.auth)  # type: ignore[arg-type]

    def volume_file(self, connection_info: dict[str, Any]) -> Path:
        """The local raw file of a volume, from Cinder's ``os-initialize_connection`` answer
        (``{"driver_volume_type": "nfs", "data": {"export", "name", ...}}``)."""
        data = connection_info["data"]
        return self.exports[data["export"]] / data["name"]

    def leftovers(self) -> list[str]:
        """What of this cloud still exists (empty after ``stop()``): running services, the
        bind mount, the work directory, the RabbitMQ virtual host."""
        found = [f"process {name} ({proc.pid})" for name, proc in self.processes.items()
                 if proc.poll() is None]
        mounts = Path("/proc/mounts").read_text()
        found += [f"mount {line.split()[1]}" for line in mounts.splitlines()
                  if str(self.work) in line]
        if self.work.exists():
            found.append(f"directory {self.work}")
        vhosts = subprocess.run(["rabbitmqctl", "-q", "list_vhosts"], capture_output=True,
                                text=True, timeout=60).stdout.split()
        if self.work.name in vhosts:
            found.append(f"RabbitMQ virtual host {self.work.name}")
        return found

    def log(self, service: str) -> Path:
        return self.work / "logs" / f"{service}.log"

    def stop(self) -> None:
        """Stop every service (SIGTERM, SIGKILL after 3 s), unmount the bind mount, remove
        the RabbitMQ virtual host and the work directory."""
        ops.stop_processes(list(self.processes.values()), signal.SIGTERM, grace=3)
        for cleanup in reversed(self._cleanups):
            with contextlib.suppress(Exception):
                cleanup()
        shutil.rmtree(self.work, ignore_errors=True)


def _run(argv: list[str], log: Path, env: dict[str, str] | None = None) -> None:
    with open(log, "ab") as out:
        proc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT,
                              env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})})
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:3])} failed: {ops_tail(log)}")


def ops_tail(log: Path, chars: int = 3000) -> str:
    try:
        return log.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def _spawn(argv: list[str], log: Path, env: dict[str, str] | None = None
           ) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})},
                                start_new_session=True)


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], check=True, capture_output=True)


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


def _authtoken(keystone_url: str) -> str:
    return f"""www_authenticate_uri = {keystone_url}
auth_url = {keystone_url}
auth_type = password
username = admin
password = {ops.ADMIN_PASSWORD}
project_name = admin
user_domain_name = Default
project_domain_name = Default
region_name = {REGION}
"""


def _wait_until(what: str, check: Callable[[], bool], timeout: float,
                procs: dict[str, subprocess.Popen[bytes]], logs: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, proc in procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited: {ops_tail(logs / f'{name}.log')}")
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.5)
    raise RuntimeError(f"{what} not ready in {timeout:.0f} s")


def reap_stale_clouds(base: Path | None = None) -> list[Path]:
    """Remove the clouds under ``base`` (default: the temporary directory) whose starting
    process is gone, e.g. a test run killed before its fixture's teardown: every process
    naming the cloud's directory killed, what is mounted under it unmounted, its RabbitMQ
    virtual host and the directory deleted (``coriolis.leftovers``). Returns the directories
    removed."""
    return owned_folders.reap("coriolis-openstack-*", _umount, base,
                              also=lambda work: _rabbitmqctl("delete_vhost", work.name))


def start_cloud(base: Path | None = None) -> OpenStackCloud:
    """Start the whole cloud in a new temporary directory (under ``base`` when given) and
    provision it: volume types, flavors ``m1.tiny`` (1 vCPU, 512 MiB, 1 GiB) and ``m1.small``
    (2 vCPU, 2 GiB, 10 GiB), networks, an image. Raises RuntimeError with the end of the
    failing service's log. ``stop()`` undoes everything, also after a failed start; a cloud
    whose starter died without ``stop()`` is removed by the next ``start_cloud``
    (``reap_stale_clouds``)."""
    started = time.monotonic()
    env_dir = cloud_venv()
    reap_stale_clouds(base)
    work = Path(tempfile.mkdtemp(prefix="coriolis-openstack-", dir=base))
    owned_folders.claim(work)
    logs = work / "logs"
    logs.mkdir()
    vhost = work.name  # one RabbitMQ virtual host per cloud, named after its directory
    cloud: OpenStackCloud | None = None
    cleanups: list[Callable[[], None]] = []
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        _rabbitmqctl("add_vhost", vhost)
        cleanups.append(lambda: _rabbitmqctl("delete_vhost", vhost))
        _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        keystone = ops.start_keystone(work / "keystone", env_dir)
        procs["keystone"] = keystone.process
        # The services authenticate as admin and send service tokens, which keystonemiddleware
        # accepts only from users with the `service` role.
        admin_id = keystone.admin("GET", "/users?name=admin")["users"][0]["id"]
        keystone.admin("PUT", f"/projects/{keystone.project('admin')}/users/{admin_id}/roles/"
                              f"{keystone.role_id('service')}")
        cloud = OpenStackCloud(work=work, keystone=keystone, auth={
            "auth_url": keystone.url, "username": "admin", "password": ops.ADMIN_PASSWORD,
            "project_name": "admin", "user_domain_name": "Default",
            "project_domain_name": "Default", "region_name": REGION, "interface": "public",
            "identity_api_version": "3"}, endpoints={"identity": keystone.url}, exports={},
            processes=procs, _cleanups=cleanups)
        _start_services(cloud, env_dir, vhost)
        _provision(cloud)
        cloud.startup_seconds = time.monotonic() - started
        return cloud
    except BaseException:
        if cloud is None:
            ops.stop_processes(list(procs.values()), signal.SIGTERM, grace=3)
            for cleanup in reversed(cleanups):
                with contextlib.suppress(Exception):
                    cleanup()
            shutil.rmtree(work, ignore_errors=True)
        else:
            cloud.stop()
        raise


def _start_services(cloud: OpenStackCloud, env_dir: Path, vhost: str) -> None:
    work, keystone, procs = cloud.work, cloud.keystone, cloud.processes
    logs = work / "logs"
    bin_ = env_dir / "bin"
    etc = env_dir / "etc"
    ports = {name: ops.free_port() for name in ("image", "volumev3", "network", "placement",
                                                "compute")}
    urls = {"image": f"http://127.0.0.1:{ports['image']}",
            "volumev3": f"http://127.0.0.1:{ports['volumev3']}/v3",
            "network": f"http://127.0.0.1:{ports['network']}",
            "placement": f"http://127.0.0.1:{ports['placement']}",
            "compute": f"http://127.0.0.1:{ports['compute']}/v2.1"}
    names = {"image": "glance", "volumev3": "cinderv3", "network": "neutron",
             "placement": "placement", "compute": "nova"}
    for service_type, url in urls.items():
        keystone.catalog(service_type, names[service_type], url)
    cloud.endpoints.update(urls)
    transport = f"rabbit://guest:guest@{RABBIT}/{vhost}"
    auth = _authtoken(keystone.url)
    section_auth = auth.replace("www_authenticate_uri", "# ")  # for clients of other services
    locks = work / "locks"
    default = f"[DEFAULT]\ntransport_url = {transport}\ndebug = false\n"
    common = f"""[oslo_concurrency]
lock_path = {locks}
[oslo_messaging_notifications]
driver = noop
[keystone_authtoken]
{auth}"""

    # Glance: file store.
    gdir = work / "glance"
    for sub in ("images", "staging", "tasks"):
        (gdir / sub).mkdir(parents=True)
    gconf = gdir / "glance-api.conf"
    gconf.write_text(f"""[DEFAULT]
enabled_backends = fs:file
log_file = {logs}/glance.log
[database]
connection = sqlite:///{gdir}/glance.db?timeout=60
[glance_store]
default_backend = fs
[fs]
filesystem_store_datadir = {gdir}/images/
[os_glance_staging_store]
filesystem_store_datadir = {gdir}/staging/
[os_glance_tasks_store]
filesystem_store_datadir = {gdir}/tasks/
[paste_deploy]
flavor = keystone
config_file = {etc}/glance/glance-api-paste.ini
[oslo_concurrency]
lock_path = {locks}
[keystone_authtoken]
{auth}""")

    # Cinder: NFS driver over a bind mount at the driver's hashed mount point.
    cdir = work / "cinder"
    export = work / "nfs-export"
    export.mkdir()
    mount_base = cdir / "mnt"
    mount_point = mount_base / hashlib.md5(NFS_SHARE.encode()).hexdigest()
    mount_point.mkdir(parents=True)
    subprocess.run(["mount", "--bind", str(export), str(mount_point)], check=True,
                   capture_output=True)
    cloud._cleanups.append(lambda: _umount(mount_point))
    cloud.exports[NFS_SHARE] = export
    (cdir / "nfs_shares").write_text(NFS_SHARE + "\n")
    cconf = cdir / "cinder.conf"
    cconf.write_text(default + f"""state_path = {cdir}
auth_strategy = keystone
api_paste_config = {etc}/cinder/api-paste.ini
rootwrap_config = {etc}/cinder/rootwrap.conf
my_ip = 127.0.0.1
host = coriolis-cinder
enabled_backends = nfs
default_volume_type = {cloud.volume_type}
glance_api_servers = {urls['image']}
[database]
connection = sqlite:///{cdir}/cinder.db?timeout=60
[coordination]
backend_url = file://{cdir}/coordination
[nova]
{section_auth}
[service_user]
send_service_user_token = true
{section_auth}
[cinder_sys_admin]
helper_command = {bin_}/privsep-helper --config-file {cconf}
[privsep_osbrick]
helper_command = {bin_}/privsep-helper --config-file {cconf}
[nfs]
volume_driver = cinder.volume.drivers.nfs.NfsDriver
volume_backend_name = {cloud.volume_backend_name}
nfs_shares_config = {cdir}/nfs_shares
nfs_mount_point_base = {mount_base}
nfs_snapshot_support = true
nfs_sparsed_volumes = true
nas_secure_file_operations = false
nas_secure_file_permissions = false
""" + common)

    # Placement.
    pdir = work / "placement"
    pdir.mkdir()
    (pdir / "placement.conf").write_text(f"""[DEFAULT]
log_file = {logs}/placement.log
[placement_database]
connection = sqlite:///{pdir}/placement.db?timeout=60
[api]
auth_strategy = keystone
[keystone_authtoken]
{auth}""")

    # Neutron: ML2, flat and vlan networks on physnet1, OVS mechanism driver, no agent.
    ndir = work / "neutron"
    ndir.mkdir()
    nconf = ndir / "neutron.conf"
    nconf.write_text(default + f"""state_path = {ndir}
core_plugin = ml2
service_plugins =
auth_strategy = keystone
api_paste_config = {etc}/neutron/api-paste.ini
notify_nova_on_port_status_changes = false
notify_nova_on_port_data_changes = false
dhcp_agent_notification = false
agent_down_time = 2147483
log_file = {logs}/neutron.log
[database]
connection = sqlite:///{ndir}/neutron.db?timeout=60
[nova]
{section_auth}
[ml2]
type_drivers = flat,vlan
tenant_network_types = vlan
mechanism_drivers = openvswitch
extension_drivers = port_security
[ml2_type_flat]
flat_networks = physnet1
[ml2_type_vlan]
network_vlan_ranges = physnet1:100:199
""" + common)

    # Nova: one cell, FakeDriver compute named after the host Neutron binds.
    vdir = work / "nova"
    (vdir / "instances").mkdir(parents=True)
    vconf = vdir / "nova.conf"
    vconf.write_text(default + f"""state_path = {vdir}
instances_path = {vdir}/instances
host = {COMPUTE_HOST}
compute_driver = coriolis_fake_compute.SnapshotFakeDriver
my_ip = 127.0.0.1
[api]
auth_strategy = keystone
[wsgi]
api_paste_config = {etc}/nova/api-paste.ini
[api_database]
connection = sqlite:///{vdir}/nova_api.db?timeout=60
[database]
connection = sqlite:///{vdir}/nova.db?timeout=60
[scheduler]
discover_hosts_in_cells_interval = 2
workers = 1
[conductor]
workers = 1
[placement]
{section_auth}
[neutron]
{section_auth}
[cinder]
os_region_name = {REGION}
{section_auth}
[glance]
region_name = {REGION}
[service_user]
send_service_user_token = true
{section_auth}
[nova_sys_admin]
helper_command = {bin_}/privsep-helper --config-file {vconf}
""" + common)
    (vdir / "api-paste.ini").symlink_to(etc / "nova" / "api-paste.ini")
    # Every service imports the sitecustomize of this folder (PYTHONPATH): it gives Nova the
    # fake driver with a snapshot that uploads (Nova imports drivers only as
    # nova.virt.<name>), and makes oslo.db begin SQLite transactions IMMEDIATE.
    site = work / "site"
    site.mkdir()
    shutil.copyfile(Path(__file__).with_name("openstack_fake_compute.py"),
                    site / "coriolis_fake_compute.py")
    (site / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    site_env = {"PYTHONPATH": str(site)}

    # Schemas, each service's in its own thread (subprocesses: mostly imports and SQLite).
    def steps(log: str, *argvs: list[str]) -> Callable[[], None]:
        def run() -> None:
            for argv in argvs:
                _run(argv, logs / f"setup-{log}.log")
        return run

    manage = [str(bin_ / "nova-manage"), "--config-file", str(vconf)]
    schemas = [
        steps("glance", [str(bin_ / "glance-manage"), "--config-file", str(gconf), "db_sync"]),
        steps("cinder", [str(bin_ / "cinder-manage"), "--config-file", str(cconf), "db",
                         "sync"]),
        steps("placement", [str(bin_ / "placement-manage"), "--config-file",
                            str(pdir / "placement.conf"), "db", "sync"]),
        steps("neutron", [str(bin_ / "python"), "-c", _NEUTRON_SCHEMA, str(nconf)]),
        steps("nova", [*manage, "api_db", "sync"],
              [*manage, "cell_v2", "map_cell0", "--database_connection",
               f"sqlite:///{vdir}/nova_cell0.db?timeout=60"],
              [*manage, "cell_v2", "create_cell", "--name", "cell1"], [*manage, "db", "sync"]),
    ]
    with ThreadPoolExecutor(3) as pool:
        for future in [pool.submit(step) for step in schemas]:
            future.result()
    _register_ovs_agent(ndir / "neutron.db")
    for db in (gdir / "glance.db", cdir / "cinder.db", pdir / "placement.db",
               ndir / "neutron.db", vdir / "nova_api.db", vdir / "nova.db",
               vdir / "nova_cell0.db"):
        _write_ahead_log(db)

    # Services.
    def api(name: str, port: int, app: list[str], env: dict[str, str] | None = None) -> None:
        procs[name] = ops.uwsgi(env_dir, port, app, logs / f"{name}.log", 4,
                                {**site_env, **(env or {})})

    api("glance", ports["image"], ["--module", "glance.wsgi.api:application",
                                   "--http-auto-chunked", "--http-raw-body",
                                   "--chunked-input-limit", "10485760"],
        {"OS_GLANCE_CONFIG_DIR": str(gdir)})
    api("cinder-api", ports["volumev3"], ["--module", "cinder.wsgi.api:application",
                                          "--pyargv", f"--config-file {cconf}"])
    api("placement", ports["placement"], ["--module", "placement.wsgi.api:application"],
        {"OS_PLACEMENT_CONFIG_DIR": str(pdir)})
    api("neutron", ports["network"], ["--module", "neutron.wsgi.api:application",
                                      "--pyargv", f"--config-file {nconf}"])
    api("nova-api", ports["compute"], ["--module", "nova.wsgi.osapi_compute:application"],
        {"OS_NOVA_CONFIG_DIR": str(vdir)})
    for name, conf in (("cinder-scheduler", cconf), ("cinder-volume", cconf),
                       ("nova-conductor", vconf), ("nova-scheduler", vconf),
                       ("nova-compute", vconf)):
        procs[name] = _spawn([str(bin_ / name), "--config-file", str(conf), "--log-file",
                              str(logs / f"{name}.log")], logs / f"{name}.out", site_env)
    for name, url in (("glance", urls["image"]), ("cinder-api", urls["volumev3"]),
                      ("placement", urls["placement"]), ("neutron", urls["network"]),
                      ("nova-api", urls["compute"])):
        ops.wait_http(url, procs[name], logs / f"{name}.log", timeout=120)


# SQLite in WAL mode with a busy timeout still fails at once with "database is locked" when a
# transaction that began reading (oslo.db emits a plain, deferred BEGIN) then writes while
# another connection has written since: the busy timeout cannot help that upgrade, and
# Cinder's quota reservations and Nova's service reports failed so under load. Beginning
# every transaction IMMEDIATE takes the write lock first, so the busy timeout applies.
_SITECUSTOMIZE = """
import importlib.abc, importlib.machinery, importlib.util, os, sys

HERE = os.path.dirname(__file__)


def _begin_immediate(engines):
    import sqlalchemy
    original = engines._init_events

    def init_events(engine, *args, **kwargs):
        if engine.dialect.name == "sqlite":
            @sqlalchemy.event.listens_for(engine, "begin", insert=True)
            def begin(conn):
                if "in_transaction" not in conn.info:
                    conn.execute(sqlalchemy.text("BEGIN IMMEDIATE"))
                    conn.info["in_transaction"] = True
        return original(engine, *args, **kwargs)

    engines._init_events = init_events


class _Then(importlib.abc.Loader):
    def __init__(self, inner, after):
        self.inner, self.after = inner, after

    def create_module(self, spec):
        return self.inner.create_module(spec)

    def exec_module(self, module):
        self.inner.exec_module(module)
        self.after(module)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "nova.virt.coriolis_fake_compute":
            return importlib.util.spec_from_file_location(
                name, os.path.join(HERE, "coriolis_fake_compute.py"))
        if name == "oslo_db.sqlalchemy.engines":
            spec = importlib.machinery.PathFinder.find_spec(name, path)
            if spec is not None and spec.loader is not None:
                spec.loader = _Then(spec.loader, _begin_immediate)
            return spec
        return None


sys.meta_path.insert(0, _Finder())
"""

# Neutron's migrations need ALTER TABLE that SQLite lacks: create the schema from the models
# (as Neutron's own functional tests do), then stamp the migration heads.
_NEUTRON_SCHEMA = """
import subprocess, sys
from oslo_config import cfg
from oslo_db import options
from neutron.db.migration.models import head
import sqlalchemy
options.set_defaults(cfg.CONF)
cfg.CONF(["--config-file", sys.argv[1]], project="neutron")
engine = sqlalchemy.create_engine(cfg.CONF.database.connection)
head.get_metadata().create_all(engine)
subprocess.run([sys.executable.replace("python", "neutron-db-manage"), "--config-file",
                sys.argv[1], "stamp", "heads"], check=True)
"""


def _write_ahead_log(db: Path) -> None:
    """SQLite in WAL mode (kept in the file): readers no longer block the writer. With a
    busy timeout of 60 s on every connection (``?timeout=60``), this is what keeps Nova's
    conductor, scheduler and compute from failing with "database is locked" on a loaded
    2-core machine, as they did with the default journal and 5 s."""
    with contextlib.closing(sqlite3.connect(db)) as sql:
        sql.execute("PRAGMA journal_mode=WAL")


def _register_ovs_agent(db: Path) -> None:
    """The row an Open vSwitch agent on ``COMPUTE_HOST`` writes with its first state report:
    bridge ``br-ex`` for ``physnet1``, no tunnels."""
    now = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    config = {"bridge_mappings": {"physnet1": "br-ex"}, "tunnel_types": [],
              "integration_bridge": "br-int", "datapath_type": "system",
              "ovs_hybrid_plug": False, "ovs_capabilities": {"datapath_types": ["system"],
                                                             "iface_types": ["internal"]}}
    with contextlib.closing(sqlite3.connect(db)) as sql, sql:
        sql.execute(
            "INSERT INTO agents (id, agent_type, binary, topic, host, admin_state_up, "
            "created_at, started_at, heartbeat_timestamp, configurations, load, "
            "resources_synced) VALUES (?, ?, ?, ?, ?, 1, ?, ?, ?, ?, 0, 1)",
            (str(uuid.uuid4()), "Open vSwitch agent", "neutron-openvswitch-agent", "N/A",
             COMPUTE_HOST, now, now, now, json.dumps(config)))


def _provision(cloud: OpenStackCloud) -> None:
    """Wait for every service, then create what the tests need."""
    conn = cloud.connect()
    logs = cloud.work / "logs"
    procs = cloud.processes
    _wait_until("cinder-volume", lambda: any(
        s.binary == "cinder-volume" and s.state == "up"
        for s in conn.block_storage.services()), 120, procs, logs)
    _wait_until("nova-compute", lambda: any(
        s.binary == "nova-compute" and s.state == "up" for s in conn.compute.services()),
        120, procs, logs)
    _wait_until("the compute node in placement and the cell", lambda: bool(
        list(conn.compute.hypervisors())) and bool(list(conn.placement.resource_providers())),
        120, procs, logs)
    for name in (cloud.volume_type, cloud.volume_type_other):
        existing = conn.block_storage.find_type(name)
        vtype = existing or conn.block_storage.create_type(
            name=name, extra_specs={"volume_backend_name": cloud.volume_backend_name})
        if existing:
            conn.block_storage.update_type_extra_specs(
                vtype, volume_backend_name=cloud.volume_backend_name)
    for name, vcpus, ram, disk in (("m1.tiny", 1, 512, 1), ("m1.small", 2, 2048, 10)):
        cloud.flavors[name] = conn.compute.create_flavor(
            name=name, vcpus=vcpus, ram=ram, disk=disk).id
    net = conn.network.create_network(name="private")
    cloud.network_id = net.id
    cloud.subnet_id = conn.network.create_subnet(
        network_id=net.id, ip_version=4, cidr="10.10.0.0/24", name="private-subnet").id
    public = conn.network.create_network(
        name="public", provider_network_type="flat", provider_physical_network="physnet1",
        is_router_external=False, is_shared=True)
    cloud.network_other_id = public.id
    conn.network.create_subnet(network_id=public.id, ip_version=4, cidr="172.24.4.0/24",
                               name="public-subnet")
    image = conn.image.create_image(name="cirros-raw", disk_format="raw",
                                    container_format="bare", data=b"\0" * (1 << 20),
                                    visibility="public")
    cloud.image_id = image.id
