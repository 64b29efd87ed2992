" Vim syntax file
" Language: fdsl (filter policies for FUSE stacked filesystems)
" Install:  copy editors/vim/* into ~/.vim/ (or add editors/vim to 'runtimepath')

if exists("b:current_syntax")
  finish
endif

syn keyword fdslDeclaration include const set predicate counter map array hash max
syn keyword fdslPolicy      default readonly hide perms force_user force_group
syn keyword fdslPolicy      under passthrough backing userspace
syn keyword fdslRule        on pre post test at expect
syn keyword fdslStatement   if else let count by log drop entries where
syn keyword fdslDecision    allow deny return
syn keyword fdslOperator    and or not in out like matches startswith endswith
syn keyword fdslBoolean     true false

syn match   fdslErrno       "\<E[A-Z0-9]\+\>"
syn match   fdslNumber      "\<0[xX][0-9a-fA-F_]\+\>"
syn match   fdslNumber      "\<0[oO][0-7_]\+\>"
syn match   fdslNumber      "\<0[bB][01_]\+\>"
syn match   fdslNumber      "\<[0-9][0-9_]*[KMG]\=\>"
syn match   fdslEscape      contained "\\\([ntr0\\"]\|x\x\x\)"
syn region  fdslString      start=+"+ skip=+\\.+ end=+"+ oneline contains=fdslEscape,fdslFormat
syn match   fdslFormat      contained "%[-0-9]*l\{0,2}[diuxXsc%]"
syn keyword fdslTodo        contained TODO FIXME XXX NOTE
syn match   fdslComment     "#.*$" contains=fdslTodo

hi def link fdslDeclaration Structure
hi def link fdslPolicy      Statement
hi def link fdslRule        Keyword
hi def link fdslStatement   Conditional
hi def link fdslDecision    Exception
hi def link fdslOperator    Operator
hi def link fdslBoolean     Boolean
hi def link fdslErrno       Constant
hi def link fdslNumber      Number
hi def link fdslString      String
hi def link fdslEscape      SpecialChar
hi def link fdslFormat      SpecialChar
hi def link fdslComment     Comment
hi def link fdslTodo        Todo

let b:current_syntax = "fdsl"
