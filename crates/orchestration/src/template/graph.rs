//! The dependency graph of a stack's resources: an order to create them in, the
//! resources ready once others are done, and the cycles refused at validation.

use std::collections::{BTreeMap, BTreeSet};

/// `deps[r]` = the resources `r` needs before it can be created.
pub type Deps = BTreeMap<String, BTreeSet<String>>;

/// A creation order (Kahn's algorithm, ties by name), or the resources caught in a
/// cycle when there is one.
pub fn order(deps: &Deps) -> Result<Vec<String>, Vec<String>> {
    let mut remaining: BTreeMap<&str, usize> =
        deps.iter().map(|(r, d)| (r.as_str(), d.iter().filter(|x| deps.contains_key(*x)).count())).collect();
    let mut out = Vec::new();
    loop {
        let ready: Vec<&str> = remaining.iter().filter(|(_, n)| **n == 0).map(|(r, _)| *r).collect();
        if ready.is_empty() {
            break;
        }
        for r in ready {
            remaining.remove(r);
            out.push(r.to_string());
            for (other, d) in deps {
                if d.contains(r) {
                    if let Some(n) = remaining.get_mut(other.as_str()) {
                        *n -= 1;
                    }
                }
            }
        }
    }
    if remaining.is_empty() {
        Ok(out)
    } else {
        // Only the members of a cycle (not what merely waits on one): repeatedly drop
        // resources nothing left depends on.
        let mut left: BTreeSet<&str> = remaining.keys().copied().collect();
        loop {
            let needed: BTreeSet<&str> =
                left.iter().flat_map(|r| deps[*r].iter().map(String::as_str)).filter(|d| left.contains(d)).collect();
            let before = left.len();
            left.retain(|r| needed.contains(r));
            if left.len() == before {
                break;
            }
        }
        Err(left.into_iter().map(str::to_string).collect())
    }
}

/// The reverse graph: `dependents[r]` = the resources that need `r`.
pub fn dependents(deps: &Deps) -> Deps {
    let mut out: Deps = deps.keys().map(|k| (k.clone(), BTreeSet::new())).collect();
    for (r, d) in deps {
        for x in d {
            if let Some(s) = out.get_mut(x) {
                s.insert(r.clone());
            }
        }
    }
    out
}
