"""The span trees of the core requests, written once: the integration tests, the Celery-shape tests
(on Redis and RabbitMQ) and `make test-stack` (through Jaeger) all assert these same trees."""

# The INTERNAL spans UserStore.create and deliver_welcome_email come from @traced (pattern 1),
# auth_check and serialize are manual spans (pattern 2).
CREATE_USER_TREE = """
    gateway  SERVER    POST /api/users
    ├─ gateway  CLIENT    POST
    │  └─ users  SERVER    POST /users
    │     ├─ users  INTERNAL  auth_check
    │     ├─ users  INTERNAL  UserStore.create
    │     │  ├─ users  CLIENT    INCRBY
    │     │  └─ users  CLIENT    HSET
    │     └─ users  INTERNAL  serialize
    └─ gateway  PRODUCER  apply_async/send_welcome_email
       └─ worker  CONSUMER  run/send_welcome_email
          └─ worker  INTERNAL  deliver_welcome_email
"""
CREATE_USER_SPANS = 11

REPORT_TREE = """
    gateway  SERVER    POST /api/users/<user_id>/report
    └─ gateway  PRODUCER  apply_async/generate_report
       └─ worker  CONSUMER  run/generate_report
          └─ worker  INTERNAL  build_report
             └─ worker  CLIENT    GET
                └─ users  SERVER    GET /users/<int:user_id>
                   ├─ users  INTERNAL  auth_check
                   ├─ users  INTERNAL  UserStore.get
                   │  └─ users  CLIENT    HGETALL
                   └─ users  INTERNAL  serialize
"""

# The greylisted welcome e-mail: the first attempt is deferred and Celery's autoretry publishes the same job
# again from inside that attempt's `run` span; the second attempt succeeds. One trace, a staircase.
RETRY_TREE = """
    gateway  SERVER    POST /api/users
    ├─ gateway  CLIENT    POST
    │  └─ users  SERVER    POST /users
    │     ├─ users  INTERNAL  auth_check
    │     ├─ users  INTERNAL  UserStore.create
    │     │  ├─ users  CLIENT    INCRBY
    │     │  └─ users  CLIENT    HSET
    │     └─ users  INTERNAL  serialize
    └─ gateway  PRODUCER  apply_async/send_welcome_email
       └─ worker  CONSUMER  run/send_welcome_email
          ├─ worker  INTERNAL  deliver_welcome_email
          └─ worker  PRODUCER  apply_async/send_welcome_email
             └─ worker  CONSUMER  run/send_welcome_email
                └─ worker  INTERNAL  deliver_welcome_email
"""
