"""The lab: simulated hosts as network namespaces, each with its own Open vSwitch.

Public API (used by the end-to-end tests, ``make demo`` and the benchmarks)::

    from contiv_sdn.lab import Lab
    lab = Lab(hosts=2).up()          # or: with Lab(hosts=2) as lab: ...
    c = lab.add_container("node1", "web", "contiv-net")
    c.exec("ping", "-c", "1", "10.1.1.3")
    lab.down()

CLI: ``python -m contiv_sdn.lab up|down|status|exec|container`` (``--help``).
"""

from contiv_sdn.lab.core import DEFAULT_ROOT, Container, Host, Lab, LabConfig
from contiv_sdn.lab.http import ApiError
from contiv_sdn.lab.ovs import OvsInstance
from contiv_sdn.lab.sh import LabError

__all__ = ["Lab", "LabConfig", "Host", "Container", "LabError", "ApiError", "OvsInstance",
           "DEFAULT_ROOT"]
