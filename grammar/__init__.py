"""Subject grammar and dial plan: who receives a fax and what digits to dial."""
