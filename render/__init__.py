"""Documents to fax pages: PDF, images, text, Office, header and cover."""
