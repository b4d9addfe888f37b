# bash completion for prismq, the command line of PrismQ Runner (docs/cli.md).
#
# cmake --install puts it in ${datadir}/bash-completion/completions/prismq, where
# bash-completion loads it the first time prismq is completed; or source it yourself:
#     source client/cli/completion/prismq.bash
#
# Completes the global options, the commands, each command's options, file names after
# --tls-ca/--tls-cert/--tls-key, host names after --tls-server-name, run statuses after
# ls --status, health's services, help's commands; and, asking the server through prismq
# itself (the same --target and --tls-* options as the command line being completed, else
# $PRISMQ_TARGET...):
#   - module ids after `run`, `presets [save|delete]` and `ls --module` (prismq modules
#     --json);
#   - the parameters of the module after `run MODULE -p`, as KEY= (same call);
#   - run ids after status, logs, wait (the 100 newest runs: prismq ls --json) and cancel
#     (only the queued and running ones: ls --status queued --status running).
# A server query is bounded in time (2 s) and fails silently: nothing is offered.
# bash only (it needs bash 4.2+); it does not depend on bash-completion.
#
# The command and option lists below mirror client/cli (prismq.c's table, each
# cmd-*.c's long options); tests/integration/test_completion.py checks them against
# `prismq --help` and `prismq help COMMAND`.

# The commands, in prismq --help's order.
_prismq_commands=(modules presets run ls status logs wait cancel health help)

# Sets `opts` (what to offer) and `argopts` (those that take an argument) for command $1,
# or for the global options when $1 is empty. `opts` and `argopts` are the caller's.
_prismq_options() {
  argopts=()
  case $1 in
  '')
    opts=(--target --tls-ca --tls-cert --tls-key --tls-server-name -h --help --version)
    argopts=(--target --tls-ca --tls-cert --tls-key --tls-server-name)
    ;;
  status | health) opts=(--json --help) ;;
  modules)
    opts=(--category --tag --json --help)
    argopts=(--category --tag)
    ;;
  presets)
    opts=(-p --param --description --json --help)
    argopts=(-p --param --description)
    ;;
  run)
    opts=(--preset -p --param --label --timeout --request-id -f --follow --no-progress --json
      --help)
    argopts=(--preset -p --param --label --timeout --request-id)
    ;;
  ls)
    opts=(--status --module --label --limit --json --help)
    argopts=(--status --module --label --limit)
    ;;
  logs)
    opts=(-f --follow --stdout --stderr --from --help)
    argopts=(--from)
    ;;
  wait)
    opts=(--timeout --no-progress --json --help)
    argopts=(--timeout)
    ;;
  cancel)
    opts=(--grace --json --help)
    argopts=(--grace)
    ;;
  help) opts=(--help) ;;
  *) opts=() ;;
  esac
}

# The option of `opts` that the long option $1 (without any "=VALUE") names, as getopt_long
# reads it: an exact match, else the one option it is an unambiguous prefix of. Empty
# if none.
_prismq_long() {
  local o found=''
  for o in "${opts[@]}"; do
    [[ $o == "$1" ]] && { printf '%s' "$o"; return; }
  done
  for o in "${opts[@]}"; do
    if [[ $o == --* && $o == "$1"* ]]; then
      [[ -n $found ]] && return # ambiguous
      found=$o
    fi
  done
  printf '%s' "$found"
}

# 0 if option $1 (as _prismq_long returns it, or "-X") takes an argument.
_prismq_takes_arg() {
  local o
  for o in "${argopts[@]}"; do [[ $o == "$1" ]] && return 0; done
  return 1
}

# A word of the command line as the program gets it, for the few simple forms: 'x',
# "x", backslash escapes, a leading ~/. No other expansion (nothing is evaluated).
_prismq_dequote() {
  local w=$1
  if [[ $w == \'* ]]; then
    w=${w#\'}
    w=${w%\'}
  elif [[ $w == \"* ]]; then
    w=${w#\"}
    w=${w%\"}
  else
    w=${w//\\\\/$'\001'}
    w=${w//\\/}
    w=${w//$'\001'/\\}
  fi
  # shellcheck disable=SC2088 # a literal ~ in the word, expanded here
  [[ $w == '~' || $w == '~/'* ]] && w=$HOME${w#\~}
  printf '%s' "$w"
}

# Sets words, cword and cur from COMP_WORDS, COMP_CWORD, COMP_LINE and COMP_POINT,
# joining back what bash split at "=", ":" and "@" (COMP_WORDBREAKS): --target=host:port
# is one word, as prismq gets it. cur is the current word up to the cursor.
_prismq_words() {
  words=("${COMP_WORDS[@]}")
  cword=$COMP_CWORD
  cur=${COMP_WORDS[COMP_CWORD]}
  [[ -n ${COMP_LINE-} ]] || return 0
  local line=$COMP_LINE point=${COMP_POINT:-${#COMP_LINE}} pos=0 i w rest ws
  local -a nw=() nstart=()
  local ncword=-1
  for ((i = 0; i < ${#COMP_WORDS[@]}; i++)); do
    w=${COMP_WORDS[i]}
    rest=${line:pos}
    ws=${rest%%[![:space:]]*}
    ((pos += ${#ws}))
    if [[ ${line:pos:${#w}} != "$w" ]]; then
      return 0 # not the line we thought: keep bash's words
    fi
    if ((${#nw[@]} > 0 && ${#ws} == 0)) &&
      [[ $w =~ ^[=:@]+$ || ${nw[${#nw[@]} - 1]} =~ [=:@]$ ]]; then
      nw[${#nw[@]} - 1]+=$w
    else
      nw+=("$w")
      nstart+=("$pos")
    fi
    ((i == COMP_CWORD)) && ncword=$((${#nw[@]} - 1))
    ((pos += ${#w}))
  done
  ((ncword >= 0)) || return 0
  words=("${nw[@]}")
  cword=$ncword
  cur=${words[cword]}
  local start=${nstart[cword]}
  if ((point >= start && point - start < ${#cur})); then
    cur=${cur:0:point-start}
  fi
}

# Runs prismq with the global options of the line being completed and "$@", at most 2 s,
# stdin from /dev/null, stderr dropped. Its stdout goes to ours.
_prismq_query() {
  local prog
  prog=$(_prismq_dequote "${words[0]}")
  [[ $prog == */* && ! -x $prog ]] && return 1
  type -P timeout >/dev/null 2>&1 || return 1
  timeout -k 1 2 "$prog" "${globals[@]}" "$@" </dev/null 2>/dev/null
}

# The server's module ids, one a line (ids match ^[A-Za-z0-9_.-]{1,64}$).
_prismq_modules() {
  local m
  _prismq_query modules --json | grep -oE '"id": *"[A-Za-z0-9_.-]+"' 2>/dev/null |
    while IFS= read -r m; do
      m=${m%\"}
      printf '%s\n' "${m##*\"}"
    done
}

# The names of module $1's parameters, one a line. In a Module, "id" comes first and
# "name" next (the module's), then its parameters' "name"s: the proto's field order,
# which prismq's JSON keeps.
_prismq_params() {
  local t mod='' n=0
  _prismq_query modules --json | grep -oE '"(id|name)": *"(\\.|[^"\\])*"' 2>/dev/null |
    while IFS= read -r t; do
      if [[ $t =~ ^\"id\":\ *\"(.*)\"$ ]]; then
        mod=${BASH_REMATCH[1]}
        n=0
      elif [[ $t =~ ^\"name\":\ *\"([A-Za-z_][A-Za-z0-9_]*)\"$ ]]; then
        ((n++ > 0)) && [[ $mod == "$1" ]] && printf '%s\n' "${BASH_REMATCH[1]}"
      else
        ((n++))
      fi
    done
}

# Run ids of the newest runs, one a line; "$@" are more ls options (--status ...).
_prismq_runs() {
  local r
  _prismq_query ls --json --limit 100 "$@" | grep -oE '"runId": *"[A-Za-z0-9_.-]+"' 2>/dev/null |
    while IFS= read -r r; do
      r=${r%\"}
      printf '%s\n' "${r##*\"}"
    done
}

# Adds to `cands` the words of "$@" that start with $value.
_prismq_filter() {
  local c
  for c; do [[ $c == "$value"* ]] && cands+=("$c"); done
}

# Sets `cands` to the completions of the argument $value of option $1 (command $2).
_prismq_optarg() {
  local -a list
  case $2:$1 in
  :--tls-ca | :--tls-cert | :--tls-key)
    files=1
    mapfile -t cands < <(compgen -f -- "$(_prismq_dequote "$value")" 2>/dev/null)
    ;;
  :--tls-server-name)
    mapfile -t cands < <(compgen -A hostname -- "$value" 2>/dev/null)
    ;;
  ls:--status)
    _prismq_filter queued running completed failed cancelled timed_out lost
    ;;
  ls:--module)
    mapfile -t list < <(_prismq_modules)
    _prismq_filter "${list[@]}"
    ;;
  run:-p | run:--param)
    if [[ -n ${pos[0]-} && $value != *=* ]]; then
      mapfile -t list < <(_prismq_params "${pos[0]}")
      list=("${list[@]/%/=}")
      _prismq_filter "${list[@]}"
      nospace=1
    fi
    ;;
  esac
}

_prismq() {
  local -a words opts argopts globals=() pos=() cands=()
  local cword cur value prefix='' cmd='' o i w n files='' nospace='' ended='' done=''
  COMPREPLY=()
  _prismq_words

  # The global options, up to the command ("+": they end at the first non-option).
  _prismq_options ""
  for ((i = 1; i < cword; i++)); do
    w=${words[i]}
    if [[ $w == -- ]]; then
      ((i + 1 < cword)) && cmd=${words[i + 1]}
      ((i += 1))
      break
    elif [[ $w == -h || $w == --help || $w == --version ]]; then
      return 0 # nothing follows
    elif [[ $w == --?* ]]; then
      o=$(_prismq_long "${w%%=*}")
      [[ $o == --help || $o == --version ]] && return 0
      if [[ $w == *=* ]]; then
        [[ -n $o ]] && globals+=("$o=$(_prismq_dequote "${w#*=}")")
      elif [[ -n $o ]] && _prismq_takes_arg "$o"; then
        if ((i + 1 == cword)); then # completing its argument
          value=$cur
          _prismq_optarg "$o" ""
          done=1
          break
        fi
        globals+=("$o=$(_prismq_dequote "${words[i + 1]}")")
        ((i++))
      fi
    elif [[ $w == -?* ]]; then
      : # no other short global option
    else
      cmd=$w
      break
    fi
  done

  if [[ -n $done ]]; then
    :
  elif [[ -z $cmd ]]; then
    if [[ $cur == --*=* ]]; then # --opt=VALUE
      o=$(_prismq_long "${cur%%=*}")
      prefix=${cur%%=*}=
      value=${cur#*=}
      [[ -n $o ]] && _prismq_takes_arg "$o" && _prismq_optarg "$o" ""
    elif [[ $cur == -* ]]; then
      value=$cur
      _prismq_filter "${opts[@]}"
    elif ((i >= cword)); then
      value=$cur
      _prismq_filter "${_prismq_commands[@]}"
    fi
  elif [[ -n $cmd ]]; then
    # The command's own options (getopt permutes: options and arguments mix) up to "--".
    _prismq_options "$cmd"
    [[ ${#opts[@]} -gt 0 ]] || return 0
    for ((i++; i < cword; i++)); do
      w=${words[i]}
      if [[ -n $ended || $w != -?* ]]; then
        pos+=("$(_prismq_dequote "$w")")
      elif [[ $w == -- ]]; then
        ended=1
      elif [[ $w == --* ]]; then
        o=$(_prismq_long "${w%%=*}")
        if [[ $w != *=* && -n $o ]] && _prismq_takes_arg "$o"; then
          if ((i + 1 == cword)); then
            value=$cur
            _prismq_optarg "$o" "$cmd"
            break
          fi
          ((i++))
        fi
      else # -abc: short options, the first that takes an argument eats the rest
        for ((n = 1; n < ${#w}; n++)); do
          if _prismq_takes_arg "-${w:n:1}"; then
            if ((n + 1 == ${#w})); then
              if ((i + 1 == cword)); then
                value=$cur
                _prismq_optarg "-${w:n:1}" "$cmd"
                break 2
              fi
              ((i++))
            fi
            break
          fi
        done
      fi
    done
    if ((i >= cword)); then
      if [[ -z $ended && $cur == --*=* ]]; then
        o=$(_prismq_long "${cur%%=*}")
        prefix=${cur%%=*}=
        value=${cur#*=}
        [[ -n $o ]] && _prismq_takes_arg "$o" && _prismq_optarg "$o" "$cmd"
      elif [[ -z $ended && $cur == -p?* && $cmd == run ]]; then # -pKEY
        prefix=-p
        value=${cur#-p}
        _prismq_optarg -p "$cmd"
      elif [[ -z $ended && $cur == -* ]]; then
        value=$cur
        _prismq_filter "${opts[@]}"
      else
        value=$cur
        local -a list=()
        case $cmd:${#pos[@]} in
        run:0) mapfile -t list < <(_prismq_modules) ;;
        presets:0) mapfile -t list < <(printf '%s\n' save delete && _prismq_modules) ;;
        presets:1) [[ ${pos[0]} == save || ${pos[0]} == delete ]] &&
          mapfile -t list < <(_prismq_modules) ;;
        status:0 | logs:0 | wait:0) mapfile -t list < <(_prismq_runs) ;;
        cancel:0) mapfile -t list < <(_prismq_runs --status queued --status running) ;;
        health:0) list=(prismq.runner.v1.Runner prismq.admin.v1.Admin) ;;
        help:0) list=("${_prismq_commands[@]}") ;;
        *) [[ -z $ended ]] && list=("${opts[@]}") ;; # no argument left to give
        esac
        _prismq_filter "${list[@]}"
      fi
    fi
  fi

  # What readline replaces is the text after the last COMP_WORDBREAKS character of the
  # word we joined back: take that much off each completion.
  local strip=${cur%[=:@]*} c
  if [[ $strip != "$cur" ]]; then
    strip=${cur:0:${#strip}+1}
    c=${cur:${#strip}-1:1}
    [[ ${COMP_WORDBREAKS-} == *"$c"* ]] || strip=
  else
    strip=
  fi
  for c in "${cands[@]}"; do
    c=$prefix$c
    COMPREPLY+=("${c:${#strip}}")
  done
  [[ -n $files ]] && compopt -o filenames 2>/dev/null
  [[ -n $nospace ]] && compopt -o nospace 2>/dev/null
  return 0
}

complete -F _prismq prismq
