"""The shop demo: the example shop run end to end on a real broker, and its account.

`run_shop(ShopOptions(orders=50))` starts inventory, orders, payments and notifications
under `kit run` and the customer_stats Faust worker, each in its own process; places the
orders of a deterministic plan through `orders.place_order` calls; waits (with deadlines)
for payments, confirmations, cancellations, stock and the Faust table to settle; stops
inventory to show a call failing fast; stops everything with SIGTERM; and returns the
account with its checks. `./dev demo` (services/demo.py) and the tests call it.

- plan.py     the orders and the outcome each must have
- fleet.py    the processes
- drive.py    placing orders, restocking
- observe.py  the run's records on every shop topic
- state.py    inventory's stock topic, the Faust table, the Faust worker's command
- account.py  the counts and the checks; report.py prints them
- run.py      one run, start to end
"""
