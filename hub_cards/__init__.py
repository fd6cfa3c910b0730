"""Jinja templates of the Hub cards (dataset and model README.md files)."""

from jinja2 import Environment, PackageLoader, StrictUndefined

_env = Environment(
    loader=PackageLoader("hub_cards", ""),
    undefined=StrictUndefined,
    keep_trailing_newline=True,
    trim_blocks=True,
    lstrip_blocks=True,
)


def render(template: str, **context) -> str:
    """Render `hub_cards/<template>` (e.g. `dataset_card.md.jinja`) with `context`."""
    return _env.get_template(template).render(**context)
