"""netctl, the Contiv command line, over the netmaster REST API.

Modules: ``goflag`` (Go-style flag parsing), ``tabwriter`` (Go's table
alignment), ``wire`` (the bodies Contiv's Go client sent, from the model's
declaration, and Go-style reading of replies), ``client`` (HTTP to the
netmaster), ``context`` (what commands and actions share: the Command record,
the Context, exit codes), ``help`` (help screens), ``actions`` (what each
command does), ``commands`` (the command table), ``app`` (dispatch),
``main`` (the console script).  Imports run one way, in that order: no cycle.
"""
