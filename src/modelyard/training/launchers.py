"""Which launcher runs a training job's gang: by the runtime its spec names."""

from __future__ import annotations

import functools

from modelyard.config import Settings
from modelyard.training.jobs import LauncherFactory
from modelyard.training.launch import GangLauncher


def launcher_for(runtime: str, settings: Settings, project: str) -> LauncherFactory:
    """``local``: processes on this machine; ``ray``: Ray Train workers on the cluster
    ``MODELYARD_RAY_ADDRESS`` names (a local Ray without one); ``kubernetes``: a
    TrainJob or PyTorchJob in the project's namespace, as ``MODELYARD_KUBERNETES_VALUES``
    places it (the Ray and Kubernetes modules are imported only when used)."""
    if runtime == "ray":
        from modelyard.runtimes.ray.train import RayGangLauncher

        return functools.partial(RayGangLauncher, address=settings.ray_address)
    if runtime == "kubernetes":
        from modelyard.runtimes.kubernetes.runtime import KubeCluster, load_cluster_settings
        from modelyard.runtimes.kubernetes.trainjobs import KubernetesGangLauncher

        return functools.partial(
            KubernetesGangLauncher,
            settings=load_cluster_settings(settings.kubernetes_values),
            cluster=KubeCluster.from_environment(),
            project=project,
            platform_namespace=settings.platform_namespace,
        )
    return GangLauncher
