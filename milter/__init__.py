"""The Postfix milter: decides at SMTP time and spools fax jobs."""
