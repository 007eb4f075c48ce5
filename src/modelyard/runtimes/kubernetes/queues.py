"""The gang scheduler's queue, when the platform owns it (``queue_capacity`` is set).

With Kueue: a ResourceFlavor, a ClusterQueue that admits at most ``queue_capacity``
from the project namespaces (selected by their labels), and in each project namespace a
LocalQueue of the name jobs carry in ``kueue.x-k8s.io/queue-name``. With Volcano: a Queue
whose ``capability`` is ``queue_capacity``, named in each gang's PodGroup. A job the
queue cannot hold waits, Pending and unadmitted, until another ends: the book's "second
job stays Pending" behind a queue capped at its GPUs.

A resource the capacity leaves out (None, or no GPUs) is not covered by the
ClusterQueue, so Kueue admits no job that asks for it; Volcano's Queue leaves it
unlimited.
"""

from __future__ import annotations

from modelyard.runtimes.kubernetes.objects import Manifest, labels, metadata, quantities
from modelyard.runtimes.kubernetes.settings import ClusterSettings, GangScheduler

KUEUE = "kueue.x-k8s.io/v1beta1"
VOLCANO = "scheduling.volcano.sh/v1beta1"
FLAVOR = "modelyard-default"


def uses_local_queues(settings: ClusterSettings) -> bool:
    """Whether each project namespace gets a Kueue LocalQueue of the platform's queue."""
    return settings.queue_capacity is not None and settings.gang_scheduler is GangScheduler.KUEUE


def cluster_queue_objects(settings: ClusterSettings) -> list[Manifest]:
    """The cluster-scoped queue objects (none without ``queue_capacity`` and a gang
    scheduler)."""
    if settings.queue_capacity is None or settings.gang_scheduler is GangScheduler.NONE:
        return []
    capacity = quantities(settings.queue_capacity)
    queue_labels = labels("queue")
    if settings.gang_scheduler is GangScheduler.VOLCANO:
        return [
            {
                "apiVersion": VOLCANO,
                "kind": "Queue",
                "metadata": metadata(settings.queue, None, queue_labels),
                "spec": {"weight": 1, "reclaimable": True, "capability": capacity},
            }
        ]
    return [
        {
            "apiVersion": KUEUE,
            "kind": "ResourceFlavor",
            "metadata": metadata(FLAVOR, None, queue_labels),
            "spec": {},
        },
        {
            "apiVersion": KUEUE,
            "kind": "ClusterQueue",
            "metadata": metadata(settings.queue, None, queue_labels),
            "spec": {
                # Every project namespace, by the labels it is made with.
                "namespaceSelector": {"matchLabels": labels("project")},
                "queueingStrategy": "BestEffortFIFO",
                "resourceGroups": [
                    {
                        "coveredResources": list(capacity),
                        "flavors": [
                            {
                                "name": FLAVOR,
                                "resources": [
                                    {"name": resource, "nominalQuota": quantity}
                                    for resource, quantity in capacity.items()
                                ],
                            }
                        ],
                    }
                ],
            },
        },
    ]


def local_queue(
    settings: ClusterSettings, project: str, namespace_labels: dict[str, str]
) -> list[Manifest]:
    """A project namespace's Kueue LocalQueue, if :func:`uses_local_queues`."""
    if not uses_local_queues(settings):
        return []
    return [
        {
            "apiVersion": KUEUE,
            "kind": "LocalQueue",
            "metadata": metadata(settings.queue, settings.namespace(project), namespace_labels),
            "spec": {"clusterQueue": settings.queue},
        }
    ]
