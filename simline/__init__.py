"""A simulated phone line: spandsp T.31 modem on a pty wired to a spandsp fax."""
