"""The web dashboard at ``/dashboard``: server-rendered pages (Jinja2) made live with htmx
and its server-sent-events extension (npm packages ``htmx.org`` and ``htmx-ext-sse``, copied
into ``static/vendor`` by ``./dev setup``)."""
