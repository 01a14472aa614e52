"""The fax daemon: spool, T.4/T.6 codec, Class 1 T.30 sender, receipts."""
