//! The scheduler's state: per-CPU runqueue samples, the attached sched_ext scheduler and its
//! user DSQs. Fields this kernel's BTF lacks are `None`; failed reads are errors.

use vm_memory::GuestMemory;

use crate::error::{Error, Result};
use crate::kernel::GuestKernel;
use crate::value::Value;
use crate::walk;

/// Longest `task_struct.comm` (`TASK_COMM_LEN`).
const COMM_LEN: usize = 16;

/// One CPU's runqueue, read at one instant. `None`: this kernel's `struct rq` has no such
/// field (or, for `curr_*`, no current task).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RqSample {
    /// The CPU.
    pub cpu: u32,
    /// `rq->nr_running`: runnable tasks of every class.
    pub nr_running: Option<u32>,
    /// `rq->clock`, ns.
    pub clock: Option<u64>,
    /// `rq->scx.nr_running`: runnable sched_ext tasks.
    pub scx_nr_running: Option<u32>,
    /// `rq->scx.local_dsq.nr`: tasks queued on the CPU's local DSQ.
    pub local_dsq_nr: Option<u32>,
    /// `rq->curr->pid`.
    pub curr_pid: Option<i32>,
    /// `rq->curr->comm`.
    pub curr_comm: Option<String>,
}

/// A user DSQ of the attached scheduler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DsqInfo {
    /// `dsq->id`.
    pub id: u64,
    /// `dsq->nr`: queued tasks.
    pub nr: u32,
    /// Guest address of the `struct scx_dispatch_q`.
    pub addr: u64,
}

impl<M: GuestMemory + ?Sized> GuestKernel<'_, M> {
    /// `cpu`'s `struct rq` (the per-CPU `runqueues`).
    pub fn rq(&self, cpu: u32) -> Result<Value<'_, M>> {
        match self.per_cpu_var("runqueues", cpu) {
            // No `.data..percpu` VAR for it: the address is still known, type it by name.
            Err(Error::Btf(_)) => self.value(self.per_cpu("runqueues", cpu)?, "rq"),
            other => other,
        }
    }

    /// The scheduling counters of `cpu`'s runqueue.
    ///
    /// ```
    /// # let guest = ktstr_guest_mem::testkit::Guest::new();
    /// # let kernel = guest.kernel();
    /// let s = kernel.rq_sample(1)?;
    /// assert_eq!((s.nr_running, s.scx_nr_running, s.local_dsq_nr), (Some(3), Some(2), Some(2)));
    /// assert_eq!(s.curr_comm.as_deref(), Some("worker-1"));
    /// # Ok::<(), ktstr_guest_mem::Error>(())
    /// ```
    pub fn rq_sample(&self, cpu: u32) -> Result<RqSample> {
        let rq = self.rq(cpu)?;
        let num =
            |path: &str| -> Result<Option<u64>> { rq.get(path)?.map(|v| v.u64()).transpose() };
        let curr = match rq.get("curr")? {
            Some(p) if p.u64()? != 0 => Some(p.deref()?),
            _ => None,
        };
        let (curr_pid, curr_comm) = match curr {
            Some(t) => (
                t.get("pid")?
                    .map(|v| v.i64())
                    .transpose()?
                    .map(|p| p as i32),
                t.get("comm")?
                    .map(|v| {
                        // Garbage decodes lossily (U+FFFD is 3 bytes): cut on a char
                        // boundary, never inside one.
                        let s = v.string()?;
                        let end = (0..=COMM_LEN.min(s.len()))
                            .rev()
                            .find(|&i| s.is_char_boundary(i))
                            .unwrap_or(0);
                        Ok::<_, Error>(s.get(..end).unwrap_or("").to_string())
                    })
                    .transpose()?,
            ),
            None => (None, None),
        };
        Ok(RqSample {
            cpu,
            nr_running: num("nr_running")?.map(|v| v as u32),
            clock: num("clock")?,
            scx_nr_running: num("scx.nr_running")?.map(|v| v as u32),
            local_dsq_nr: num("scx.local_dsq.nr")?.map(|v| v as u32),
            curr_pid,
            curr_comm,
        })
    }

    /// [`GuestKernel::rq_sample`] of every possible CPU (`0..nr_cpu_ids`).
    pub fn rq_samples(&self) -> Result<Vec<RqSample>> {
        (0..self.nr_cpu_ids()?).map(|c| self.rq_sample(c)).collect()
    }

    /// The root sched_ext scheduler (`*scx_root`, a `struct scx_sched`), or `None` when no
    /// scheduler is attached.
    pub fn scx_sched(&self) -> Result<Option<Value<'_, M>>> {
        let p = self.read_u64(self.symbol("scx_root")?)?;
        if p == 0 {
            return Ok(None);
        }
        Ok(Some(self.value(p, "scx_sched")?))
    }

    /// The attached scheduler's name (`scx_root->ops.name`).
    pub fn scheduler_name(&self) -> Result<Option<String>> {
        match self.scx_sched()? {
            Some(s) => Ok(Some(s.field("ops.name")?.string()?)),
            None => Ok(None),
        }
    }

    /// The attached scheduler's user DSQs (`scx_root->dsq_hash`), sorted by id; empty when no
    /// scheduler is attached.
    ///
    /// ```
    /// # let guest = ktstr_guest_mem::testkit::Guest::new();
    /// # let kernel = guest.kernel();
    /// let dsqs = kernel.user_dsqs()?;
    /// let ids: Vec<(u64, u32)> = dsqs.iter().map(|d| (d.id, d.nr)).collect();
    /// assert_eq!(ids, [(0x10, 5), (0x11, 0), (0x12, 1)]);
    /// # Ok::<(), ktstr_guest_mem::Error>(())
    /// ```
    pub fn user_dsqs(&self) -> Result<Vec<DsqInfo>> {
        let Some(sch) = self.scx_sched()? else {
            return Ok(Vec::new());
        };
        let heads = walk::rhashtable_heads(sch.field("dsq_hash")?)?;
        let mut out = Vec::with_capacity(heads.len());
        for h in heads {
            let dsq = self
                .value(h, "rhash_head")?
                .container_of("scx_dispatch_q", "hash_node")?;
            out.push(DsqInfo {
                id: dsq.field("id")?.u64()?,
                nr: dsq.field("nr")?.u64()? as u32,
                addr: dsq.addr(),
            });
        }
        out.sort_by_key(|d| d.id);
        Ok(out)
    }
}
