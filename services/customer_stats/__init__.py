"""customer_stats: per-customer order counts and totals, kept by a Faust app in a table.

- `app.py`: the Faust app (id `customer-stats`, or KIT_GROUP_ID): counts every
  `orders.OrderConfirmed` per customer in a table backed by its compacted changelog
  topic, publishes `customer_stats.CustomerStats` after each change, and answers the kit
  request `customer_stats.get` through kit.faust.KitBridge. Run it with
  `faust -A services.customer_stats.app worker -l info --without-web`.
- `api.py`: the kit declaration and the typed endpoint `get`, for kit callers (no Faust).
- `events.py`: `GetStats` and `CustomerStats`.

Nothing is imported here, so importing the package imports no Faust.
"""
