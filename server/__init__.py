"""botserver: serve Rasa 3 projects over Rasa's HTTP API."""

__version__ = "0.1.0"
# The Rasa version whose wire formats (tracker JSON, action-server protocol) we speak.
RASA_COMPAT_VERSION = "3.6.21"
