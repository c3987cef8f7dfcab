"Properties of the verdict rules (randsmooth_nb.verdict) and a verdict written from tables on disk."
import math
from hypothesis import given, strategies as st
from randsmooth_nb.verdict import compare, combine, write_verdict, VERDICTS
from randsmooth_nb.experiments import write_table

acc = st.floats(0, 1, allow_nan=False)
se = st.floats(0, 0.2, allow_nan=False)


@given(acc, se, acc, se)
def test_compare_is_antisymmetric(a, sa, b, sb):
    v, w = compare(a, sa, b, sb), compare(b, sb, a, sa)
    assert v in VERDICTS
    assert (v == 'held') == (w == 'not held') and (v == 'inconclusive') == (w == 'inconclusive')


@given(acc, se, acc, se, st.floats(0.5, 4))
def test_held_needs_z_standard_errors(a, sa, b, sb, z):
    if compare(a, sa, b, sb, z) == 'held': assert a - b > z * math.hypot(sa, sb)
    if a - b > z * math.hypot(sa, sb) and a > b: assert compare(a, sa, b, sb, z) == 'held'


@given(st.lists(st.sampled_from(VERDICTS), max_size=6))
def test_combine_is_the_weakest_part(vs):
    c = combine(vs)
    if 'not held' in vs: assert c == 'not held'
    elif vs and set(vs) == {'held'}: assert c == 'held'
    else: assert c == 'inconclusive'


def test_verdict_from_tables(tmp_path):
    d = tmp_path/'quick'; d.mkdir()
    write_table(d/'table2', [
        {'attack': '-', 'Madry et al.': 0.71, 'Madry et al. se': 0.01, 'Madry et al. (paper)': 0.873, 'Normal 0.5': 0.74, 'Normal 0.5 se': 0.01, 'Normal 0.5 (paper)': 0.824},
        {'attack': 'l_inf PGD-20', 'Madry et al.': 0.42, 'Madry et al. se': 0.03, 'Madry et al. (paper)': 0.456, 'Normal 0.5': 0.60, 'Normal 0.5 se': 0.03, 'Normal 0.5 (paper)': 0.587},
        {'attack': 'l2 C&W-20', 'Madry et al.': 0.40, 'Madry et al. se': 0.03, 'Madry et al. (paper)': 0.468, 'Normal 0.5': 0.30, 'Normal 0.5 se': 0.03, 'Normal 0.5 (paper)': 0.489}])
    md = write_verdict(d).read_text()
    assert '| noise beats Madry et al. under PGD (Table 2) | held |' in md
    assert '| noise beats Madry et al. under C&W (Table 2) | **not held** |' in md
    assert md.count('not run:') == 8          # every other claim: its table is missing
