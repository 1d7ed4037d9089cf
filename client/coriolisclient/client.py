"""``Client(session=keystone_session)``: one keystoneauth1 adapter, one manager per resource."""

from __future__ import annotations

from typing import Any

from keystoneauth1 import adapter

from coriolisclient.v1 import (
    admin,
    endpoints,
    licensing,
    logging,
    transfers,
)


class Client:
    def __init__(self, session: Any = None, service_type: str = "migration",
                 interface: str = "public", region_name: str | None = None,
                 endpoint_override: str | None = None, version: str = "v1",
                 service_name: str | None = None, verify: Any = True, **kwargs: Any) -> None:
        self.session = session
        self.api = adapter.Adapter(
            session, service_type=service_type, interface=interface,
            region_name=region_name, endpoint_override=endpoint_override, version=version,
            service_name=service_name, user_agent="coriolis")
        api = self.api
        self.endpoints = endpoints.EndpointManager(api)
        self.endpoint_instances = endpoints.EndpointInstanceManager(api)
        self.endpoint_networks = endpoints.EndpointNetworkManager(api)
        self.endpoint_storage = endpoints.EndpointStorageManager(api)
        self.endpoint_destination_options = endpoints.options_manager(
            api, "destination-options", "destination_options")
        self.endpoint_source_options = endpoints.options_manager(
            api, "source-options", "source_options")
        self.endpoint_destination_minion_pool_options = endpoints.options_manager(
            api, "destination-minion-pool-options", "destination_minion_pool_options")
        self.endpoint_source_minion_pool_options = endpoints.options_manager(
            api, "source-minion-pool-options", "source_minion_pool_options")
        self.migrations = transfers.MigrationManager(api)
        self.deployments = transfers.DeploymentManager(api)
        self.replicas = transfers.ReplicaManager(api)
        self.replica_executions = transfers.ReplicaExecutionManager(api)
        self.replica_schedules = transfers.ReplicaScheduleManager(api)
        self.transfers = transfers.TransferManager(api)
        self.transfer_executions = transfers.TransferExecutionManager(api)
        self.transfer_schedules = transfers.TransferScheduleManager(api)
        self.providers = admin.ProvidersManager(api)
        self.regions = admin.RegionManager(api)
        self.services = admin.ServiceManager(api)
        self.minion_pools = admin.MinionPoolManager(api)
        self.diagnostics = admin.DiagnosticsManager(api)
        self.logging = logging.LoggingManager(session, verify)
        self.licensing_server = licensing.LicensingServerManager(session, verify)
        self.licensing = licensing.LicensingManager(session, verify)
        self.licensing_appliances = self.licensing
        self.licensing_reservations = licensing.ReservationsManager(session, verify)
