"""botserver: serve Rasa 3 projects over Rasa's HTTP API."""

from server import import_trims

__version__ = "0.1.0"
# The Rasa version whose wire formats (tracker JSON, action-server protocol) we speak.
RASA_COMPAT_VERSION = "3.6.21"

import_trims.install()
