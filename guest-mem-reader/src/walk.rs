//! Bounded walks over the kernel's generic containers: the xarray under an idr, an
//! rhashtable's bucket chains, an `hlist_nulls` chain. Each step is a guest read that may
//! fail, and each walk has a step budget, so a torn or cyclic structure ends in an error value.

use vm_memory::GuestMemory;

use crate::error::{Error, Result};
use crate::kernel::GuestKernel;
use crate::value::Value;

/// Most entries collected from one container.
pub const MAX_ENTRIES: u64 = 1 << 16;
/// Most reads (nodes, chain links) one walk makes.
pub const MAX_STEPS: u64 = 1 << 20;
/// Most buckets of an rhashtable or BPF hash map believed.
pub const MAX_BUCKETS: u64 = 1 << 24;

/// Bits of an xarray node's index: `XA_CHUNK_SHIFT` (6, `include/linux/xarray.h`), checked
/// against the node's `slots` array length.
const XA_CHUNK_SHIFT: u32 = 6;

/// A step counter that fails the walk when spent.
struct Budget {
    what: &'static str,
    left: u64,
}

impl Budget {
    fn new(what: &'static str) -> Self {
        Budget {
            what,
            left: MAX_STEPS,
        }
    }
    fn step(&mut self) -> Result<()> {
        self.left = self.left.checked_sub(1).ok_or(Error::WalkLimit {
            what: self.what,
            limit: MAX_STEPS,
        })?;
        Ok(())
    }
}

/// The entries of the xarray `xa` (`struct xarray`), as (index, pointer), in index order.
/// Value entries (tagged integers) and internal entries (retry, zero, sibling) are skipped.
pub fn xarray_entries<M: GuestMemory + ?Sized>(xa: Value<'_, M>) -> Result<Vec<(u64, u64)>> {
    let k = xa.kernel();
    let head = xa.field("xa_head")?.u64()?;
    let mut out = Vec::new();
    let mut budget = Budget::new("an xarray");
    if is_node(head) {
        let slots = k.btf().member("xa_node", "slots")?;
        let nslots = k
            .btf()
            .ty(slots.ty)
            .ok()
            .and_then(|t| t.array())
            .map_or(0, |a| a.nelems);
        if nslots != 1 << XA_CHUNK_SHIFT {
            return Err(Error::Corrupt {
                what: "struct xa_node",
                addr: 0,
                why: format!("{nslots} slots per node; this reader knows 64"),
            });
        }
        walk_node(k, head - 2, None, 0, &mut out, &mut budget)?;
    } else if is_pointer(head) {
        out.push((0, head));
    }
    Ok(out)
}

/// An internal entry pointing at a node (`xa_is_node`: low bits 10, above 4096).
fn is_node(e: u64) -> bool {
    e & 3 == 2 && e > 4096
}

/// A normal pointer entry (not NULL, not a value entry, not internal).
fn is_pointer(e: u64) -> bool {
    e != 0 && e & 3 == 0
}

fn walk_node<M: GuestMemory + ?Sized>(
    k: &GuestKernel<'_, M>,
    node: u64,
    parent_shift: Option<u32>,
    base: u64,
    out: &mut Vec<(u64, u64)>,
    budget: &mut Budget,
) -> Result<()> {
    budget.step()?;
    let n = k.value(node, "xa_node")?;
    let shift = u32::try_from(n.field("shift")?.u64()?).unwrap_or(u32::MAX);
    let corrupt = |why: String| Error::Corrupt {
        what: "struct xa_node",
        addr: node,
        why,
    };
    // Shifts step down by 6 from the root to 0 at the leaves; anything else is torn memory.
    let ok = shift % XA_CHUNK_SHIFT == 0
        && shift < 64
        && parent_shift.is_none_or(|p| p == shift + XA_CHUNK_SHIFT);
    if !ok {
        return Err(corrupt(format!(
            "shift {shift} under a parent of shift {parent_shift:?}"
        )));
    }
    let slots_at = n.field("slots")?.addr();
    let raw = k.read_vec(slots_at, 8 << XA_CHUNK_SHIFT, "xa_node slots")?;
    for (i, chunk) in raw.chunks_exact(8).enumerate() {
        let mut b = [0u8; 8];
        b.copy_from_slice(chunk);
        let e = u64::from_le_bytes(b);
        let index = base | ((i as u64) << shift);
        if shift > 0 && is_node(e) {
            walk_node(k, e - 2, Some(shift), index, out, budget)?;
        } else if shift == 0 && is_pointer(e) {
            if out.len() as u64 >= MAX_ENTRIES {
                return Err(Error::WalkLimit {
                    what: "an xarray",
                    limit: MAX_ENTRIES,
                });
            }
            out.push((index, e));
        }
    }
    Ok(())
}

/// Addresses of the `struct rhash_head`s in the rhashtable `ht` (`struct rhashtable`).
/// Only the current table is walked (a resize in progress may hide entries until it ends).
pub fn rhashtable_heads<M: GuestMemory + ?Sized>(ht: Value<'_, M>) -> Result<Vec<u64>> {
    let k = ht.kernel();
    let tbl = ht.field("tbl")?.deref()?;
    let size = u64::from(tbl.field("size")?.u64()? as u32);
    let corrupt = |why: String| Error::Corrupt {
        what: "struct bucket_table",
        addr: tbl.addr(),
        why,
    };
    if let Some(nest) = tbl.get("nest")?
        && nest.u64()? != 0
    {
        return Err(corrupt("nested bucket tables are not supported".into()));
    }
    if !size.is_power_of_two() || size > MAX_BUCKETS {
        return Err(corrupt(format!("{size} buckets")));
    }
    let buckets = k.read_vec(tbl.field("buckets")?.addr(), size * 8, "rhashtable buckets")?;
    let next_off = k.btf().member("rhash_head", "next")?.byte_offset();
    let mut out = Vec::new();
    let mut budget = Budget::new("an rhashtable");
    for chunk in buckets.chunks_exact(8) {
        let mut b = [0u8; 8];
        b.copy_from_slice(chunk);
        // Bit 0 of a bucket is its lock; a chain ends at an odd "nulls" marker.
        let mut p = u64::from_le_bytes(b) & !1;
        while p != 0 && p & 1 == 0 {
            budget.step()?;
            if out.len() as u64 >= MAX_ENTRIES {
                return Err(Error::WalkLimit {
                    what: "an rhashtable",
                    limit: MAX_ENTRIES,
                });
            }
            out.push(p);
            p = k.read_u64(p.wrapping_add(next_off))?;
        }
    }
    Ok(out)
}

/// Addresses of the nodes of an `hlist_nulls` chain starting at `first` (the value of
/// `hlist_nulls_head.first`), ending at an odd nulls marker; `next_off` is the offset of
/// `next` in the node.
pub(crate) fn nulls_chain<M: GuestMemory + ?Sized>(
    k: &GuestKernel<'_, M>,
    first: u64,
    next_off: u64,
    budget_left: &mut u64,
) -> Result<Vec<u64>> {
    let mut out = Vec::new();
    let mut p = first;
    while p != 0 && p & 1 == 0 {
        *budget_left = budget_left.checked_sub(1).ok_or(Error::WalkLimit {
            what: "an hlist_nulls chain",
            limit: MAX_STEPS,
        })?;
        out.push(p);
        p = k.read_u64(p.wrapping_add(next_off))?;
    }
    Ok(out)
}
