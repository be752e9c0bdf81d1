//! Queries by name: enumerators, function prototypes, data-section variables.

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use crate::btf::Btf;
use crate::error::BtfError;
use crate::types::{EnumValue, Kind, Param, Type, TypeId};

/// A function's prototype, as [`Btf::func`] finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FuncSig<'a> {
    /// The FUNC's type id.
    pub id: TypeId,
    /// The function's name.
    pub name: &'a str,
    /// The return type (`TypeId::VOID` for `void`).
    pub ret: TypeId,
    /// The parameters, in order (without the variadic marker).
    pub params: Vec<Param<'a>>,
    /// Whether the prototype ends with `...`.
    pub variadic: bool,
}

/// A variable of a data section, as [`Btf::datasec_var`] finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatasecVar<'a> {
    /// The variable's name.
    pub name: &'a str,
    /// Byte offset in the section.
    pub offset: u32,
    /// Size in bytes.
    pub size: u32,
    /// The variable's type (what the VAR refers to).
    pub ty: TypeId,
    /// The VAR (or FUNC, for `.ksyms`) record itself.
    pub var: TypeId,
}

impl<'a> Btf<'a> {
    /// The value of the enumerator `name`, searched in every ENUM and ENUM64.
    ///
    /// ```
    /// # let bytes = ktstr_btf::testdata::tiny();
    /// let btf = ktstr_btf::Btf::parse(&bytes)?;
    /// assert_eq!(btf.enum_value("SCX_DSQ_GLOBAL")?.as_u64(), (1 << 63) | 1);
    /// assert_eq!(btf.enum_value("SCX_EXIT_ERROR_STALL")?.as_i64(), 1026);
    /// # Ok::<(), ktstr_btf::BtfError>(())
    /// ```
    pub fn enum_value(&self, name: &str) -> Result<EnumValue, BtfError> {
        let key = name.as_bytes();
        for t in self.all_types() {
            if let Some(v) = enumerator_in(t, key) {
                return Ok(v);
            }
        }
        Err(BtfError::NoSuchEnumerator(name.to_string()))
    }

    /// The value of the enumerator `name` of the enum named `enum_name`.
    ///
    /// ```
    /// # let bytes = ktstr_btf::testdata::tiny();
    /// let btf = ktstr_btf::Btf::parse(&bytes)?;
    /// let v = btf.enum_value_in("scx_exit_kind", "SCX_EXIT_ERROR_STALL")?;
    /// assert_eq!(v.as_i64(), 1026);
    /// # Ok::<(), ktstr_btf::BtfError>(())
    /// ```
    pub fn enum_value_in(&self, enum_name: &str, name: &str) -> Result<EnumValue, BtfError> {
        let mut found_enum = false;
        for id in self.find_all(enum_name) {
            let t = self.ty(id)?;
            if matches!(t.kind(), Kind::Enum | Kind::Enum64) {
                found_enum = true;
                if let Some(v) = enumerator_in(t, name.as_bytes()) {
                    return Ok(v);
                }
            }
        }
        if found_enum {
            Err(BtfError::NoSuchEnumerator(name.to_string()))
        } else {
            Err(BtfError::NoSuchType {
                name: enum_name.to_string(),
                kind: Some(Kind::Enum),
            })
        }
    }

    /// The prototype of the function `name`: parameter names and types, return type.
    ///
    /// ```
    /// # let bytes = ktstr_btf::testdata::tiny();
    /// let btf = ktstr_btf::Btf::parse(&bytes)?;
    /// let f = btf.func("scx_bpf_dsq_insert")?;
    /// let names: Vec<&str> = f.params.iter().map(|p| p.name).collect();
    /// assert_eq!(names, ["p", "dsq_id", "slice", "enq_flags"]);
    /// assert_eq!(btf.type_name(f.params[0].ty)?, "struct task_struct *");
    /// # Ok::<(), ktstr_btf::BtfError>(())
    /// ```
    pub fn func(&self, name: &str) -> Result<FuncSig<'a>, BtfError> {
        let id = self
            .find_kind(name, Kind::Func)
            .ok_or_else(|| BtfError::NoSuchType {
                name: name.to_string(),
                kind: Some(Kind::Func),
            })?;
        self.func_of(id)
    }

    /// [`Btf::func`] from a FUNC's (or FUNC_PROTO's) type id.
    pub fn func_of(&self, id: TypeId) -> Result<FuncSig<'a>, BtfError> {
        let t = self.ty(id)?;
        let (name, proto) = match t.kind() {
            Kind::Func => (t.name(), self.ty(TypeId(t.size_or_type))?),
            Kind::FuncProto => ("", t),
            found => {
                return Err(BtfError::WrongKind {
                    id: id.0,
                    expected: "a function",
                    found,
                });
            }
        };
        if proto.kind() != Kind::FuncProto {
            return Err(BtfError::WrongKind {
                id: proto.id().0,
                expected: "a function prototype",
                found: proto.kind(),
            });
        }
        let mut params: Vec<Param<'a>> = proto.params().collect();
        let variadic = params
            .last()
            .is_some_and(|p| p.ty == TypeId::VOID && p.name.is_empty());
        if variadic {
            params.pop();
        }
        Ok(FuncSig {
            id,
            name,
            ret: TypeId(proto.size_or_type),
            params,
            variadic,
        })
    }

    /// The variable `var` of the data section `section` (such as a BPF program's `.bss`).
    ///
    /// ```
    /// # let bytes = ktstr_btf::testdata::tiny();
    /// let btf = ktstr_btf::Btf::parse(&bytes)?;
    /// let v = btf.datasec_var(".bss", "nr_dispatched")?;
    /// assert_eq!((v.offset, v.size), (8, 8));
    /// assert_eq!(btf.type_name(v.ty)?, "u64");
    /// # Ok::<(), ktstr_btf::BtfError>(())
    /// ```
    pub fn datasec_var(&self, section: &str, var: &str) -> Result<DatasecVar<'a>, BtfError> {
        let sec = self.datasec(section)?;
        self.sec_entries(sec)
            .find(|v| v.name == var)
            .ok_or_else(|| BtfError::NoSuchVar {
                section: section.to_string(),
                var: var.to_string(),
            })
    }

    /// Every variable of the data section `section`, in section order.
    ///
    /// ```
    /// # let bytes = ktstr_btf::testdata::tiny();
    /// let btf = ktstr_btf::Btf::parse(&bytes)?;
    /// let names: Vec<&str> = btf.datasec_vars(".bss")?.map(|v| v.name).collect();
    /// assert_eq!(names, ["nr_enqueued", "nr_dispatched"]);
    /// # Ok::<(), ktstr_btf::BtfError>(())
    /// ```
    pub fn datasec_vars(
        &self,
        section: &str,
    ) -> Result<impl Iterator<Item = DatasecVar<'a>> + '_, BtfError> {
        let sec = self.datasec(section)?;
        Ok(self.sec_entries(sec))
    }

    fn datasec(&self, section: &str) -> Result<Type<'a>, BtfError> {
        let id = self
            .find_kind(section, Kind::Datasec)
            .ok_or_else(|| BtfError::NoSuchType {
                name: section.to_string(),
                kind: Some(Kind::Datasec),
            })?;
        self.ty(id)
    }

    fn sec_entries(&self, sec: Type<'a>) -> impl Iterator<Item = DatasecVar<'a>> + '_ {
        sec.sec_vars().filter_map(move |e| {
            let v = self.ty(e.ty).ok()?;
            let ty = match v.kind() {
                Kind::Var | Kind::Func => TypeId(v.size_or_type),
                _ => e.ty,
            };
            Some(DatasecVar {
                name: v.name(),
                offset: e.offset,
                size: e.size,
                ty,
                var: e.ty,
            })
        })
    }

    /// The C spelling of a type: `struct task_struct *`, `u64`, `void (*)(int)`, `char [16]`.
    ///
    /// ```
    /// # let bytes = ktstr_btf::testdata::tiny();
    /// let btf = ktstr_btf::Btf::parse(&bytes)?;
    /// let m = btf.member("task_struct", "comm")?;
    /// assert_eq!(btf.type_name(m.ty)?, "char [16]");
    /// # Ok::<(), ktstr_btf::BtfError>(())
    /// ```
    pub fn type_name(&self, id: TypeId) -> Result<String, BtfError> {
        crate::c_dump::type_name(self, id)
    }
}

fn enumerator_in(t: Type<'_>, key: &[u8]) -> Option<EnumValue> {
    if !matches!(t.kind(), Kind::Enum | Kind::Enum64) {
        return None;
    }
    t.enumerators()
        .find(|e| e.name.as_bytes() == key)
        .map(|e| e.value)
}
