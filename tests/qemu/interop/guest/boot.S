/* Multiboot (v1) entry: QEMU's -kernel loader jumps here in 32-bit protected
 * mode with flat segments and paging off; we only need a stack. */
    .section .multiboot, "a"
    .align 4
    .long 0x1BADB002            /* magic */
    .long 0                     /* flags: plain ELF, nothing requested */
    .long -0x1BADB002           /* checksum: magic + flags + checksum == 0 */

    .section .text
    .global _start
_start:
    mov $stack_top, %esp
    call guest_main
1:  hlt
    jmp 1b

    .section .bss
    .align 16
    .skip 16384
stack_top:

    .section .note.GNU-stack, "", @progbits
