//! The DSQs of a dump with the tasks queued on them: `dsq->list` links the tasks'
//! `scx.dsq_list.node`s (FIFO and vtime DSQs alike), skipping iterators' cursors.

use vm_memory::GuestMemory;

use super::{DsqDump, DumpLimits};
use crate::error::{Error, Result};
use crate::kernel::GuestKernel;
use crate::value::Value;

/// `SCX_DSQ_LNODE_ITER_CURSOR` (`include/linux/sched/ext.h`): a BPF iterator's cursor,
/// not a task.
const LNODE_ITER_CURSOR: u64 = 1;
/// Longest `task_struct.comm`.
const COMM_LEN: u64 = 16;

impl<M: GuestMemory + ?Sized> GuestKernel<'_, M> {
    /// The scheduler's user DSQs and every CPU's non-empty local DSQ.
    pub(crate) fn dsq_dumps(&self, limits: &DumpLimits) -> Result<Vec<DsqDump>> {
        let mut out = Vec::new();
        for d in self.user_dsqs()? {
            let dsq = self.value(d.addr, "scx_dispatch_q")?;
            out.push(self.dsq_dump(format!("{:#x}", d.id), d.nr, dsq, limits));
        }
        let cpus = self.nr_cpu_ids()?.min(limits.cpus);
        for cpu in 0..cpus {
            let Ok(dsq) = self.rq(cpu).and_then(|rq| rq.field("scx.local_dsq")) else {
                continue;
            };
            let nr = dsq.field("nr").and_then(|v| v.u64()).unwrap_or(0) as u32;
            if nr > 0 {
                out.push(self.dsq_dump(format!("local cpu{cpu}"), nr, dsq, limits));
            }
        }
        Ok(out)
    }

    fn dsq_dump(&self, name: String, nr: u32, dsq: Value<'_, M>, limits: &DumpLimits) -> DsqDump {
        let mut tasks = Vec::new();
        let note = match self.dsq_tasks(dsq, limits.entries, &mut tasks) {
            Ok(()) if tasks.len() < nr as usize => {
                Some(format!("{} more not shown", nr as usize - tasks.len()))
            }
            Ok(()) => None,
            Err(e) if e.is_missing_in_btf() => {
                Some("this kernel's BTF lacks the DSQ's task list".into())
            }
            Err(e) => Some(format!("the task list stopped: {e}")),
        };
        DsqDump {
            name,
            nr,
            tasks,
            note,
        }
    }

    fn dsq_tasks(
        &self,
        dsq: Value<'_, M>,
        limit: usize,
        out: &mut Vec<(i32, String)>,
    ) -> Result<()> {
        let head = dsq.field("list")?.addr();
        let btf = self.btf();
        let node_off = btf
            .member("task_struct", "scx.dsq_list.node")?
            .byte_offset();
        let pid_off = btf.member("task_struct", "pid")?.byte_offset();
        let comm_off = btf.member("task_struct", "comm")?.byte_offset();
        // Cursor flags sit beside the list node in `struct scx_dsq_list_node`.
        let flags_rel = btf
            .member("scx_dsq_list_node", "flags")
            .ok()
            .zip(btf.member("scx_dsq_list_node", "node").ok())
            .map(|(f, n)| f.byte_offset().wrapping_sub(n.byte_offset()));
        let mut p = self.read_u64(head)?;
        // A list longer than the step bound is torn or cyclic.
        let mut steps = (limit as u64).saturating_mul(4).max(64);
        while p != head && out.len() < limit {
            if p == 0 {
                return Err(Error::Null {
                    what: "a DSQ list link".into(),
                });
            }
            steps = steps.checked_sub(1).ok_or(Error::WalkLimit {
                what: "a DSQ's task list",
                limit: (limit as u64).saturating_mul(4).max(64),
            })?;
            let cursor = match flags_rel {
                Some(rel) => {
                    u64::from(self.read_u32(p.wrapping_add(rel))?) & LNODE_ITER_CURSOR != 0
                }
                None => false,
            };
            if !cursor {
                let task = p.wrapping_sub(node_off);
                let pid = self.read_u32(task.wrapping_add(pid_off))? as i32;
                let comm = self.read_cstr(task.wrapping_add(comm_off), COMM_LEN as usize)?;
                out.push((pid, comm));
            }
            p = self.read_u64(p)?;
        }
        Ok(())
    }
}
