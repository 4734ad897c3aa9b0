"""The prefix cache seen from the client: what an unbounded cache would hold for each request
(the ideal the server's reported cached tokens are measured against), and the run's salt that
keeps an earlier run's prefixes out of this run's figures."""
