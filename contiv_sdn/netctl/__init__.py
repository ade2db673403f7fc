"""netctl, the Contiv command line, over the netmaster REST API.

Modules: ``goflag`` (Go-style flag parsing), ``tabwriter`` (Go's table
alignment), ``wire`` (the JSON Contiv's Go client sent and printed),
``client`` (HTTP to the netmaster), ``app`` (dispatch, exit codes),
``help`` (help screens), ``commands`` (the command table), ``actions``
(what each command does), ``main`` (the console script).
"""
