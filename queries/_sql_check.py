"""Which SQL users may run (console, ``/api/sql``, ``eventscope query sql``): an allowlist
checked on DuckDB's own parse tree, never a list of what to refuse.

DuckDB parses the statement (``json_serialize_sql``: the parse tree as JSON) and the tree is
accepted only if every part of it is known and allowed: one SELECT (set operations, CTEs,
subqueries, DESCRIBE / SUMMARIZE of such a query), reading only the public tables and views
(:data:`RELATIONS`) and the CTEs it defines itself, calling only the table functions of
:data:`TABLE_FUNCTIONS` and the side-effect-free functions of :data:`FUNCTIONS`. Anything
the parser shows that is not on these lists — another table, a system view or table
function (``duckdb_databases()``, ``duckdb_settings()``), a setting (``current_setting``),
logging (``enable_logging``), ``checkpoint()``, a file, an attached database
(``postgres_query`` in DuckLake), a node type this module does not know — is refused with
a message naming it. What cannot be parsed is refused too.

Besides, the statement's cost to bind is bounded: lateral aliases, CTEs and ``*`` expand
when DuckDB binds a query, and a few lines can ask for an exponential number of
expressions (``SELECT *, * FROM (SELECT *, * FROM …)``); such a statement is refused
before DuckDB sees it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import duckdb

from ._errors import BadParameter, NotReadOnly
from ._views import VIEWS
from .schema import TABLES

__all__ = ["FUNCTIONS", "MAX_SQL_CHARS", "RELATIONS", "TABLE_FUNCTIONS", "check_statement"]

#: The public tables and views a statement may read (docs/queries.md).
RELATIONS: frozenset[str] = frozenset((*TABLES, *VIEWS, "eventscope_meta"))

#: Table functions a statement may read from: they make rows from their arguments alone.
TABLE_FUNCTIONS: frozenset[str] = frozenset(
    {"range", "generate_series", "unnest", "json_each", "json_tree"}
)

# Scalar functions, operators and macros: pure functions of their arguments. Left out on
# purpose: what reads or changes state (current_setting, getvariable, nextval, setseed,
# write_log, current_query, version, txid_current), what parses or plans other SQL
# (json_serialize_sql, json_serialize_plan), what sleeps (sleep_ms, pg_sleep), and what
# makes a large value from a small one in one call, which DuckDB's memory limit does not
# count (printf, format, bar, bitstring, to_base, list_resize, and range / generate_series
# as list functions; repeat, lpad and rpad only with sizes given as constants, see
# _SIZED).
_SCALAR = """
    !__postfix !~~ !~~* % & && * ** + - ->> / // <-> << <=> <@ >> @ @> ^ ^@ | || ~ ~~ ~~* ~~~
    abs acos acosh add age aggregate apply array_aggr array_aggregate array_append
    array_apply array_cat array_concat array_contains array_cosine_distance
    array_cosine_similarity array_cross_product array_distance array_distinct
    array_dot_product array_extract array_filter array_grade_up array_has array_has_all
    array_has_any array_indexof array_inner_product array_intersect array_length
    array_negative_dot_product array_negative_inner_product array_pop_back array_pop_front
    array_position array_prepend array_push_back array_push_front array_reduce array_reverse
    array_reverse_sort array_select array_slice array_sort array_to_json array_to_string
    array_transform array_unique array_value array_where array_zip ascii asin asinh atan
    atan2 atanh base64 bin bit_count bit_length bit_position cardinality cbrt ceil ceiling
    century char_length character_length chr concat concat_ws contains cos cosh cot
    current_date current_localtime current_localtimestamp
    damerau_levenshtein date_add date_diff date_part date_sub date_trunc datediff datepart
    datesub datetrunc day dayname dayofmonth dayofweek dayofyear days_in_month decade decode
    degrees divide editdist3 element_at encode ends_with enum_code enum_first enum_last
    enum_range enum_range_boundary epoch epoch_ms epoch_ns epoch_us era even exp factorial
    fdiv filter flatten floor fmod format_bytes formatReadableDecimalSize formatReadableSize
    from_base64 from_binary from_hex from_json from_json_strict gamma gcd gen_random_uuid
    get_bit get_current_time get_current_timestamp grade_up greatest greatest_common_divisor
    hamming hash hex hour ilike_escape instr isfinite isinf isnan isodow isoyear
    jaccard jaro_similarity jaro_winkler_similarity json json_array json_array_length
    json_contains json_exists json_extract json_extract_path json_extract_path_text
    json_extract_string json_keys json_merge_patch json_object json_pretty json_quote
    json_structure json_transform json_transform_strict json_type json_valid json_value
    julian last_day lcase lcm least least_common_multiple left left_grapheme len length
    length_grapheme levenshtein lgamma like_escape list_aggr list_aggregate list_any_value
    list_append list_apply list_approx_count_distinct list_avg list_bit_and list_bit_or
    list_bit_xor list_bool_and list_bool_or list_cat list_concat list_contains
    list_cosine_distance list_cosine_similarity list_count list_distance list_distinct
    list_dot_product list_element list_entropy list_extract list_filter list_first
    list_grade_up list_has list_has_all list_has_any list_histogram list_indexof
    list_inner_product list_intersect list_kurtosis list_kurtosis_pop list_last list_mad
    list_max list_median list_min list_mode list_negative_dot_product
    list_negative_inner_product list_pack list_position list_prepend list_product
    list_reduce list_reverse list_reverse_sort list_select list_sem list_skewness
    list_slice list_sort list_stddev_pop list_stddev_samp list_string_agg list_sum
    list_transform list_unique list_value list_var_pop list_var_samp list_where list_zip
    ln log log10 log2 lower ltrim make_date make_time make_timestamp make_timestamp_ms
    make_timestamp_ns make_timestamptz map map_concat map_contains map_contains_entry
    map_contains_value map_entries map_extract map_extract_value map_from_entries map_keys
    map_values md5 md5_number md5_number_lower md5_number_upper microsecond millennium
    millisecond minute mismatches mod month monthname multiply nanosecond nextafter
    nfc_normalize normalized_interval not_ilike_escape not_like_escape now nullif
    octet_length ord parse_dirname parse_dirpath parse_filename parse_formatted_bytes
    parse_path pi position pow power prefix quarter radians random reduce regexp_escape
    regexp_extract regexp_extract_all regexp_full_match regexp_matches regexp_replace
    regexp_split_to_array replace reverse right right_grapheme round round_even
    roundbankers row row_to_json rtrim second set_bit sha1 sha256 sign signbit sin sinh
    split split_part sqrt starts_with str_split str_split_regex strftime string_split
    string_split_regex string_to_array strip_accents strlen strpos strptime struct_concat
    struct_contains struct_extract struct_extract_at struct_has struct_indexof
    struct_insert struct_keys struct_pack struct_position struct_update struct_values substr
    substring substring_grapheme subtract suffix tan tanh time_bucket timezone timezone_hour
    timezone_minute to_base64 to_binary to_centuries to_days to_decades to_hex to_hours
    to_json to_microseconds to_millennia to_milliseconds to_minutes to_months to_quarters
    to_seconds to_timestamp to_weeks to_years today transaction_timestamp translate trim
    trunc try_strptime typeof ucase unbin unhex unicode union_extract union_tag union_value
    upper url_decode url_encode uuid uuid_extract_timestamp uuid_extract_version uuidv4
    uuidv7 week weekday weekofyear xor year yearweek
"""
# Aggregates, and the window functions (ranking, offsets); aggregates work as windows too.
_AGGREGATE = """
    any_value approx_count_distinct approx_quantile approx_top_k arbitrary arg_max
    arg_max_null arg_max_nulls_last arg_min arg_min_null arg_min_nulls_last argmax argmin
    array_agg avg bit_and bit_or bit_xor bitstring_agg bool_and bool_or corr count count_if
    count_star countif covar_pop covar_samp cume_dist dense_rank entropy favg fill first
    first_value fsum geomean geometric_mean group_concat histogram histogram_exact
    json_group_array json_group_object json_group_structure kahan_sum kurtosis kurtosis_pop
    lag last last_value lead list listagg mad max max_by mean median min min_by mode
    nth_value ntile percent_rank product quantile quantile_cont quantile_disc rank
    rank_dense regr_avgx regr_avgy regr_count regr_intercept regr_r2 regr_slope regr_sxx
    regr_sxy regr_syy reservoir_quantile row_number sem skewness stddev stddev_pop
    stddev_samp string_agg sum sum_no_overflow sumkahan var_pop var_samp variance wavg
    weighted_avg
"""
#: Functions whose result is as long as a constant argument says; allowed only while that
#: size is a constant of at most :data:`_MAX_BUILT` characters (``repeat('-', 40)``).
_SIZED = frozenset({"repeat", "lpad", "rpad"})
_MAX_BUILT = 10_000
#: Scalar, aggregate and window functions (and operators, which parse as functions).
FUNCTIONS: frozenset[str] = frozenset((_SCALAR + _AGGREGATE).split()) | _SIZED

#: Longest statement accepted, in characters: a console query is a few lines.
MAX_SQL_CHARS = 100_000
#: Most expressions a statement may expand to while DuckDB binds it (its own expressions,
#: plus each CTE, view and lateral alias again wherever it is used, and ``*`` as many as
#: the columns it stands for). The views and every example in the docs need a few hundred.
_MAX_COST = 20_000
#: What reading a view costs to bind: its definition is bound where it is used.
_VIEW_COST = 200
#: Columns assumed for a relation whose columns are not counted here.
_SOME_COLUMNS = 8

_QUERY_NODES = {"SELECT_NODE", "SET_OPERATION_NODE", "RECURSIVE_CTE_NODE"}
_EXPRESSIONS = {
    "BETWEEN",
    "CASE",
    "CAST",
    "COLLATE",
    "COLUMN_REF",
    "COMPARISON",
    "CONJUNCTION",
    "CONSTANT",
    "FUNCTION",
    "LAMBDA",
    "OPERATOR",
    "POSITIONAL_REFERENCE",
    "STAR",
    "SUBQUERY",
    "WINDOW",
}
#: ``type`` values of the parse tree's other parts (result modifiers, orders, type info).
_PLAIN_TYPES = {
    "ORDER_MODIFIER",
    "LIMIT_MODIFIER",
    "LIMIT_PERCENT_MODIFIER",
    "DISTINCT_MODIFIER",
    "ORDER_DEFAULT",
    "ASCENDING",
    "DESCENDING",
}


def check_statement(connection: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Accept ``sql`` only if it is one SELECT over the public schema (see the module).

    Raises:
        BadParameter: the text is empty, too long, or not valid SQL (names ``sql``).
        NotReadOnly: it is not one SELECT, or reads or calls something not allowed.
    """
    if not sql or not sql.strip():
        raise BadParameter("sql", "is empty; give one SELECT statement")
    if len(sql) > MAX_SQL_CHARS:
        raise BadParameter("sql", f"is {len(sql):,} characters long; at most {MAX_SQL_CHARS:,}")
    try:
        statements = connection.extract_statements(sql)
    except duckdb.Error as exc:
        raise BadParameter("sql", _first_line(str(exc))) from exc
    if len(statements) != 1:
        raise NotReadOnly(f"refused: {len(statements)} statements given; run one SELECT at a time")
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        raise NotReadOnly(
            f"refused: only SELECT statements are allowed (this is {kind.name}); "
            "the database is read-only here"
        )
    row = connection.execute("SELECT json_serialize_sql(?::VARCHAR)", [sql]).fetchone()
    tree: dict[str, Any] = json.loads(row[0]) if row else {"error": True}
    if tree.get("error"):
        reason = tree.get("error_message", "nothing parsed")
        raise NotReadOnly(f"refused: DuckDB cannot show this statement: {reason}")
    parsed: list[dict[str, Any]] = tree.get("statements") or []
    if len(parsed) != 1:
        raise NotReadOnly(f"refused: {len(parsed)} statements given; run one SELECT at a time")
    try:
        cost = _Check().query(parsed[0]["node"], {}).cost
    except RecursionError:
        raise NotReadOnly("refused: the statement is nested too deeply") from None
    except (KeyError, TypeError, AttributeError) as exc:  # a shape this module does not know
        raise NotReadOnly(f"refused: a part of the statement is not understood ({exc!r})") from exc
    if cost > _MAX_COST:
        raise NotReadOnly(
            f"refused: the statement expands to about {cost:,} expressions when it is bound "
            f"(at most {_MAX_COST:,}); repeated *, CTEs or aliases multiply"
        )


@dataclass(frozen=True, slots=True)
class _Shape:
    """What a query or relation costs to bind, and how many columns it gives."""

    cost: int
    columns: int


_Scope = Mapping[str, _Shape]  # CTE name (lower case) -> its shape


class _Check:
    """Walks one statement's parse tree, refusing what is not allowed; returns its shape."""

    def query(self, node: dict[str, Any], scope: _Scope) -> _Shape:
        kind = node["type"]
        if kind not in _QUERY_NODES:
            raise NotReadOnly(f"refused: {_words(kind)} is not allowed; only SELECT is")
        scope = self._ctes(node["cte_map"], scope)
        cost = self._plain(node.get("modifiers"), scope, {}, 1)
        if kind in ("SET_OPERATION_NODE", "RECURSIVE_CTE_NODE"):
            left = self.query(node["left"], scope)
            if kind == "RECURSIVE_CTE_NODE":  # only its recursive part may read the CTE itself
                scope = {**scope, str(node["cte_name"]).lower(): left}
            right = self.query(node["right"], scope)
            rest = [v for k, v in node.items() if k not in _SET_PARTS]
            cost += self._plain(rest, scope, {}, left.columns)
            return _Shape(cost + left.cost + right.cost, left.columns)
        source = self.relation(node["from_table"], scope)
        cost += source.cost
        aliases: dict[str, int] = {}
        columns = 0
        for item in node["select_list"]:
            stars = _stars(item)
            cost_of_item = self.expression(item, scope, aliases, source.columns)
            cost += cost_of_item
            columns += source.columns * stars if stars else 1
            if item.get("alias"):
                aliases[str(item["alias"]).lower()] = cost_of_item
        for part in ("where_clause", "group_expressions", "having", "qualify", "sample"):
            cost += self._plain(node.get(part), scope, aliases, source.columns)
        for key in node:
            if key not in _SELECT_PARTS:
                raise NotReadOnly(f"refused: a part of the statement is not understood ({key})")
        return _Shape(cost, max(columns, 1))

    def _ctes(self, cte_map: dict[str, Any], scope: _Scope) -> _Scope:
        """Each CTE sees those defined before it (a recursive one also itself, in its
        recursive part); the query sees them all."""
        for entry in cte_map["map"]:
            name = str(entry["key"]).lower()
            value = entry["value"]
            shape = self.query(value["query"]["node"], scope)
            self._plain(value.get("key_targets"), scope, {}, shape.columns)
            columns = len(value.get("aliases") or ()) or shape.columns
            scope = {**scope, name: _Shape(shape.cost, columns)}
        return scope

    def relation(self, ref: dict[str, Any], scope: _Scope) -> _Shape:
        kind = ref["type"]
        sample = self._plain(ref.get("sample"), scope, {}, 1)
        if kind == "BASE_TABLE":
            return self._table(ref, scope, sample)
        if kind == "TABLE_FUNCTION":
            function = ref["function"]
            name = str(function["function_name"]).lower()
            if name not in TABLE_FUNCTIONS or function["catalog"] or function["schema"]:
                raise NotReadOnly(
                    f"refused: the table function {_qualified(function)}() is not allowed; "
                    f"only {', '.join(sorted(TABLE_FUNCTIONS))} and the tables "
                    f"{', '.join(sorted(RELATIONS))}"
                )
            cost = self._plain(function["children"], scope, {}, 1)
            return _Shape(1 + sample + cost, _SOME_COLUMNS)
        if kind == "JOIN":
            left = self.relation(ref["left"], scope)
            right = self.relation(ref["right"], scope)
            columns = left.columns + right.columns
            condition = self._plain(ref.get("condition"), scope, {}, columns)
            return _Shape(left.cost + right.cost + condition + sample, columns)
        if kind == "SUBQUERY":
            shape = self.query(ref["subquery"]["node"], scope)
            return _Shape(shape.cost + sample, shape.columns)
        if kind == "EXPRESSION_LIST":
            rows = ref["values"]
            cost = self._plain(rows, scope, {}, 1)
            return _Shape(cost + sample, len(rows[0]) if rows else 1)
        if kind == "EMPTY":
            return _Shape(sample, 0)
        if kind == "SHOW_REF":  # DESCRIBE / SUMMARIZE of a query, not SHOW TABLES
            if ref.get("query") is None or ref.get("table_name"):
                raise NotReadOnly("refused: SHOW lists the database's catalog; query the tables")
            shape = self.query(ref["query"], scope)
            return _Shape(shape.cost + sample, _SOME_COLUMNS)
        if kind == "PIVOT":
            if ref.get("pivot_enum"):
                raise NotReadOnly("refused: PIVOT over an enum type is not allowed")
            source = self.relation(ref["source"], scope)
            parts = [v for k, v in ref.items() if k not in ("type", "source", "sample")]
            cost = self._plain(parts, scope, {}, source.columns)
            return _Shape(source.cost + cost + sample, source.columns + _SOME_COLUMNS)
        raise NotReadOnly(f"refused: reading from {_words(kind)} is not allowed")

    def _table(self, ref: dict[str, Any], scope: _Scope, sample: int) -> _Shape:
        name = str(ref["table_name"]).lower()
        schema = str(ref["schema_name"]).lower()
        at = self._plain(ref.get("at_clause"), scope, {}, 1)
        if not ref["catalog_name"] and not schema and name in scope:
            cte = scope[name]
            return _Shape(cte.cost + at + sample, cte.columns)
        if not ref["catalog_name"] and schema in ("", "main") and name in RELATIONS:
            if name in TABLES:
                return _Shape(1 + at + sample, len(TABLES[name]))
            return _Shape(_VIEW_COST + at + sample, 30)
        parts = (ref["catalog_name"], ref["schema_name"], ref["table_name"])
        shown = ".".join(str(p) for p in parts if p)
        raise NotReadOnly(
            f"refused: {shown!r} is not one of the eventscope tables; only "
            f"{', '.join(sorted(RELATIONS))} can be queried"
        )

    def expression(
        self, node: dict[str, Any], scope: _Scope, aliases: Mapping[str, int], columns: int
    ) -> int:
        """Check one expression; its cost (``*`` counts the columns it stands for)."""
        kind = node["class"]
        if kind not in _EXPRESSIONS:
            raise NotReadOnly(f"refused: {_words(kind)} is not allowed in a statement here")
        if kind in ("FUNCTION", "WINDOW"):
            name = str(node["function_name"]).lower()
            if (
                name not in FUNCTIONS
                or node.get("catalog")
                or str(node.get("schema") or "").lower() not in ("", "main")
                or node.get("export_state")
            ):
                raise NotReadOnly(
                    f"refused: the function {_qualified(node)}() is not allowed here "
                    "(only side-effect-free functions are)"
                )
            if name in _SIZED:
                _check_size(name, node["children"])
        if kind == "COLUMN_REF":
            names = node["column_names"]
            if len(names) == 1 and str(names[0]).lower() in aliases:
                return aliases[str(names[0]).lower()]  # a lateral alias: bound again here
            return 1
        cost = 1
        for key, value in node.items():
            if kind == "SUBQUERY" and key == "subquery":
                cost += self.query(value["node"], scope).cost
            else:
                cost += self._plain(value, scope, aliases, columns)
        return cost * columns if kind == "STAR" else cost

    def _plain(self, value: Any, scope: _Scope, aliases: Mapping[str, int], columns: int) -> int:
        """Check any part of the tree: expressions are checked as such, anything else must
        be plain data (names, constants, type information, result modifiers)."""
        if isinstance(value, list):
            return sum(self._plain(item, scope, aliases, columns) for item in value)
        if not isinstance(value, dict):
            return 0
        if "class" in value:
            return self.expression(value, scope, aliases, columns)
        kind = value.get("type")
        if isinstance(kind, str) and kind not in _PLAIN_TYPES and not kind.endswith("_TYPE_INFO"):
            raise NotReadOnly(f"refused: {_words(kind)} is not allowed here")
        return sum(self._plain(item, scope, aliases, columns) for item in value.values())


_SET_PARTS = {"type", "modifiers", "cte_map", "left", "right"}
_SELECT_PARTS = {
    "type",
    "modifiers",
    "cte_map",
    "select_list",
    "from_table",
    "where_clause",
    "group_expressions",
    "group_sets",
    "aggregate_handling",
    "having",
    "sample",
    "qualify",
}


def _check_size(name: str, arguments: list[Any]) -> None:
    """``repeat(text, n)``: both constants; ``lpad`` / ``rpad(text, n, …)``: ``n`` constant.
    The length they build must be at most :data:`_MAX_BUILT`."""
    count = _constant(arguments[1]) if len(arguments) > 1 else None
    built: int | None = None
    if isinstance(count, int) and not isinstance(count, bool):
        built = count
        if name == "repeat":
            text = _constant(arguments[0])
            built = count * len(text) if isinstance(text, str) else None
    if built is None or built > _MAX_BUILT:
        raise NotReadOnly(
            f"refused: {name}() builds a value as long as its arguments say; give them as "
            f"constants, for at most {_MAX_BUILT:,} characters"
        )


def _constant(node: Any) -> Any:
    """The value of a constant expression, or None."""
    if isinstance(node, dict) and node.get("class") == "CONSTANT":
        value = node.get("value") or {}
        return None if value.get("is_null") else value.get("value")
    return None


def _stars(node: Any) -> int:
    """How many ``*`` / ``COLUMNS(…)`` an expression holds (each expands to columns)."""
    if isinstance(node, list):
        return sum(_stars(item) for item in node)
    if not isinstance(node, dict):
        return 0
    own = 1 if node.get("class") == "STAR" else 0
    if node.get("class") == "SUBQUERY":
        return own
    return own + sum(_stars(item) for item in node.values())


def _qualified(function: dict[str, Any]) -> str:
    parts = (function.get("catalog"), function.get("schema"), function["function_name"])
    return ".".join(str(p) for p in parts if p)


def _words(kind: str) -> str:
    return kind.replace("_", " ").lower()


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "invalid SQL"
