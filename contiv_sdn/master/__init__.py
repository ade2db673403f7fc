"""Object semantics: what create/update/delete of each Contiv object does.

:class:`Master` is the facade the REST API calls; each object type's rules
live in their own module (``network``, ``group``, ``tenant``...), and every
operation commits as one atomic, optimistic Redis transaction.
"""

from contiv_sdn.master.config import MasterConfig
from contiv_sdn.master.core import Master
from contiv_sdn.master.errors import MasterError

__all__ = ["Master", "MasterConfig", "MasterError"]
