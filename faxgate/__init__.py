"""faxgate: an e-mail to fax gateway for Postfix."""

__version__ = "0.1.0"
