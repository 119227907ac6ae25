//! [`ArcList`]: the values an index keeps under one key (the workloads with one IP, one per
//! network; the services with one hostname, one per namespace). Almost always one, so one is
//! stored inline with no allocation, and more share one slice; clones never copy.

use std::sync::Arc;

#[derive(Debug)]
pub(super) enum ArcList<T> {
    One(Arc<T>),
    More(Arc<[Arc<T>]>),
}

impl<T> Clone for ArcList<T> {
    fn clone(&self) -> Self {
        match self {
            ArcList::One(v) => ArcList::One(v.clone()),
            ArcList::More(vs) => ArcList::More(vs.clone()),
        }
    }
}

impl<T> ArcList<T> {
    pub(super) fn as_slice(&self) -> &[Arc<T>] {
        match self {
            ArcList::One(v) => std::slice::from_ref(v),
            ArcList::More(vs) => vs,
        }
    }

    /// A list of `items`; `None` when there are none.
    fn from_vec(mut items: Vec<Arc<T>>) -> Option<ArcList<T>> {
        match items.len() {
            0 => None,
            1 => items.pop().map(ArcList::One),
            _ => Some(ArcList::More(items.into())),
        }
    }

    /// `list` (if any) with `value` added, replacing the entry that `same` says is the same
    /// thing; entries are kept sorted by `order`, so which one a lookup finds first does not
    /// depend on the order of changes.
    pub(super) fn with<K: Ord>(
        list: Option<&ArcList<T>>,
        value: Arc<T>,
        order: impl Fn(&T) -> K,
        same: impl Fn(&T, &T) -> bool,
    ) -> ArcList<T> {
        let Some(list) = list else {
            return ArcList::One(value);
        };
        let mut items: Vec<Arc<T>> = list.as_slice().iter().filter(|v| !same(v, &value)).cloned().collect();
        let key = order(&value);
        let at = items.partition_point(|v| order(v) <= key);
        items.insert(at, value);
        ArcList::from_vec(items).unwrap_or_else(|| unreachable!("one was just added"))
    }

    /// `list` without the entries `gone` matches; `None` when nothing is left.
    pub(super) fn without(list: &ArcList<T>, gone: impl Fn(&T) -> bool) -> Option<ArcList<T>> {
        ArcList::from_vec(list.as_slice().iter().filter(|v| !gone(v)).cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_and_replaces_the_same_entry() {
        let list = ArcList::with(None, Arc::new((2, "b")), |v| v.0, |a, b| a.1 == b.1);
        let list = ArcList::with(Some(&list), Arc::new((1, "a")), |v| v.0, |a, b| a.1 == b.1);
        let list = ArcList::with(Some(&list), Arc::new((3, "b")), |v| v.0, |a, b| a.1 == b.1);
        let items: Vec<_> = list.as_slice().iter().map(|v| **v).collect();
        assert_eq!(items, [(1, "a"), (3, "b")]);
        let left = ArcList::without(&list, |v| v.1 == "a").expect("one is left");
        assert!(matches!(left, ArcList::One(ref v) if **v == (3, "b")), "one entry is stored inline: {left:?}");
        assert!(ArcList::without(&left, |_| true).is_none());
    }
}
