"""py-amqp's private names (the client kombu's ``amqp://`` transport uses), spelt in this
module only, as :mod:`jobs.compat.kombu` does for kombu's; imported only by
:mod:`jobs.transport.amqp`, since py-amqp comes with the ``amqp`` extra.

``tests/test_kombu_contract.py`` checks each name in :data:`jobs.compat.kombu.USED` noted
here against the installed py-amqp.
"""

from __future__ import annotations

from amqp import spec, transport as amqp_transport

from jobs.compat.kombu import _Hooks, _hooks, _note


class TCPTransport(_Hooks, amqp_transport.TCPTransport):
    """py-amqp's transport over plain TCP; a subclass that defines ``read_exactly`` has it
    installed as py-amqp's ``_read`` (which its ``read_frame`` calls, and nothing else)."""

    HOOKS = _hooks(
        amqp_transport.TCPTransport,
        read_exactly="_read",  # (n, initial=False): exactly n bytes from the socket
    )


#: The errnos of a read that found nothing yet (py-amqp's own set): not a broken connection.
UNAVAILABLE = amqp_transport._UNAVAIL
_note("amqp.transport._UNAVAIL")


def deliver_handler(channel):
    """What py-amqp's ``channel`` calls with a Basic.Deliver's arguments and its content
    (the listener its ``dispatch_method`` looks up), or None where that generic dispatch
    must take the method: the channel is closing, or a one-shot wait for a Basic.Deliver
    is pending."""
    if channel.is_closing or spec.Basic.Deliver in channel._pending:
        return None
    return channel._callbacks.get(spec.Basic.Deliver)


_note("amqp.abstract_channel.AbstractChannel._pending",
      "amqp.abstract_channel.AbstractChannel._callbacks")
